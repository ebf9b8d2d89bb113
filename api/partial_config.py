"""The experiment config as a request body: every field optional, nothing unknown accepted.

``POST``/``PATCH`` experiments take *part* of the config (DESIGN section 5):
what is omitted keeps its default (create) or its stored value (patch). The
body types here are derived from core's ``ExperimentConfig``, so the OpenAPI
document describes every section, field, bound and allowed value of the
config with ``additionalProperties: false``, and msgspec checks exactly that
when the request is decoded. ``sent_fields`` gives core back what the client
sent, as plain data, for its own deeper checks (architectures, augmentations,
devices, split) and for the deep merge of a patch.
"""

from __future__ import annotations

import types
from typing import Annotated, Any, Union, get_args, get_origin

import msgspec

from modelyard.core.training.config import ExperimentConfig

_partials: dict[type, type] = {}


def _all_optional(cls: type[msgspec.Struct]) -> bool:
    return all(f.default is not msgspec.NODEFAULT or f.default_factory is not msgspec.NODEFAULT
               for f in msgspec.structs.fields(cls))


def _partial_type(annotation: Any) -> Any:
    """``annotation`` with every config section Struct inside it replaced by its partial form."""
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct) and _all_optional(annotation):
        return partial_struct(annotation)
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        members = tuple(_partial_type(arg) for arg in get_args(annotation))
        return Union[members]  # noqa: UP007 - built from a tuple
    return annotation  # scalars, Literals, lists of complete items (augmentations), Annotated bounds


def partial_struct(cls: type[msgspec.Struct]) -> type[msgspec.Struct]:
    """``Partial<Name>``: ``cls``'s fields, each optional (unset when omitted), sections partial too."""
    if cls not in _partials:
        fields = [(f.name, Union[_partial_type(f.type), msgspec.UnsetType], msgspec.UNSET)  # noqa: UP007
                  for f in msgspec.structs.fields(cls)]
        partial = msgspec.defstruct(f"Partial{cls.__name__}", fields, forbid_unknown_fields=True, module=__name__)
        partial.__doc__ = (cls.__doc__ or f"Part of {cls.__name__}.").strip() + " Any field may be omitted."
        _partials[cls] = partial
    return _partials[cls]


PartialExperimentConfig = Annotated[
    partial_struct(ExperimentConfig),
    msgspec.Meta(description="Any part of the experiment config (DESIGN section 5); omitted fields take the "
                             "defaults on create and keep their stored values on update."),
]


def sent_fields(config: msgspec.Struct | msgspec.UnsetType) -> dict[str, Any]:
    """What the client sent, as plain data (unset fields are left out at every level)."""
    if config is msgspec.UNSET:
        return {}
    sent: dict[str, Any] = msgspec.to_builtins(config)
    return sent
