"""Plugins' own checks of a request, run when it is saved: ``validate`` of architectures, exporters and importers.

Core checks what it can know itself first (the architecture's declared input
size constraints); then the plugin's optional ``validate`` sees the request
and raises ``ValidationError`` for what it cannot honour. Both run when an
experiment is saved (and again when its run starts), when an export is
requested and when an import starts, so an impossible request is a 422 at
once, naming the field, instead of a failed job later.

Each ``validate`` receives its main argument positionally (the experiment
config, the export options, the import folder) and, like a pluggy hook, only
the extra keyword arguments its signature names (``task``, ``config``), so
adding context later never breaks an existing plugin. Fields in a plugin's
error are relative to what it was given (``data.image_size`` in a config
becomes ``config.data.image_size``); a crash inside ``validate`` becomes a
``ValidationError`` naming the plugin, with the traceback in the log.

Added in 0.3.
"""

from __future__ import annotations

import copy
import inspect
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .errors import ValidationError
from .plugin_types import Architecture, Exporter

log = logging.getLogger(__name__)

_IMAGE_SIZE = "config.data.image_size"


def check_architecture_config(arch: Architecture, config: dict[str, Any], task: str | None = None) -> None:
    """Refuse a config ``arch`` cannot train: its declared input size constraints, then ``arch.validate``.

    :param config: the resolved experiment config as plain data (the document of DESIGN section 5).
    :param task: the project's task id, passed to ``validate`` only if it names a ``task`` argument.
    """
    size = _image_size(config)
    if size is not None:
        check_input_size(arch, size)
    if arch.validate is not None:
        _call(arch.validate, _document(config), {"task": task}, what=f"architecture '{arch.name}'",
              root="config", default_field="config.model.architecture")


def check_input_size(arch: Architecture, size: Sequence[int]) -> None:
    """``size`` (``[height, width]``) against ``arch.min_input_size`` and ``arch.input_size_multiple``."""
    height, width = int(size[0]), int(size[1])
    if arch.min_input_size is not None:
        min_h, min_w = (int(v) for v in arch.min_input_size)
        if height < min_h or width < min_w:
            raise ValidationError(
                f"{arch.name} needs an input of at least {min_h}x{min_w} pixels, got {height}x{width}",
                field=_IMAGE_SIZE, details={"min_input_size": [min_h, min_w]},
            )
    multiple = arch.input_size_multiple
    if multiple is not None and multiple > 1 and (height % multiple or width % multiple):
        def nearest(value: int) -> int:  # the next multiple up
            return max(multiple, -(-value // multiple) * multiple)

        raise ValidationError(
            f"{arch.name} needs an input size whose sides are multiples of {multiple}, got {height}x{width} "
            f"(e.g. {nearest(height)}x{nearest(width)})",
            field=_IMAGE_SIZE, details={"input_size_multiple": multiple},
        )


def check_exporter_options(exporter: Exporter, options: dict[str, Any], config: dict[str, Any] | None = None,
                           task: str | None = None) -> None:
    """``exporter.validate(options)`` on the request's resolved options (its own schema's, defaults filled).

    ``config`` (the run's frozen experiment config as plain data) and ``task`` go
    to ``validate`` only if it names them. Fields become ``options.<field>``.
    """
    validate = getattr(exporter, "validate", None)
    if validate is None:
        return
    _call(validate, copy.deepcopy(options), {"config": _document(config) if config is not None else None, "task": task},
          what=f"export format '{exporter.id}'", root="options", default_field="options")


def check_importer_source(importer: object, root: Path, task: str | None = None, field: str = "path") -> None:
    """An importer's optional ``validate(root)`` before anything is read; ``field`` names the request's source."""
    validate = getattr(importer, "validate", None)
    if validate is None:
        return
    _call(validate, root, {"task": task}, what=f"importer '{getattr(importer, 'id', '?')}'", root=None,
          default_field=field)


# -- calling ---------------------------------------------------------------------------------------


def named_keywords(function: Callable[..., Any], available: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``available`` that ``function`` accepts by keyword (all of them with ``**kwargs``)."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable without a signature: give it nothing extra
        return {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return dict(available)
    keyword = {p.name for p in parameters if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}
    return {name: value for name, value in available.items() if name in keyword}


def names_parameter(function: Callable[..., Any], name: str) -> bool:
    """Whether ``function`` names a parameter ``name`` it takes by keyword (``**kwargs`` alone does not count).

    For an opt-in that changes what a plugin must do with the value (load the
    weights itself, run on a device): a catch-all ``**kwargs`` would take it and
    silently ignore it.
    """
    try:
        parameter = inspect.signature(function).parameters.get(name)
    except (TypeError, ValueError):
        return False
    return parameter is not None and parameter.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                        inspect.Parameter.KEYWORD_ONLY)


def _call(validate: Callable[..., Any], argument: Any, extras: dict[str, Any], *, what: str, root: str | None,
          default_field: str) -> None:
    try:
        validate(argument, **named_keywords(validate, extras))
    except ValidationError as exc:
        field = _rooted(exc.field, root) or default_field
        details = dict(exc.details) if isinstance(exc.details, dict) else {}
        raise ValidationError(exc.message, field=field, details={k: v for k, v in details.items() if k != "field"}) from exc
    except Exception as exc:  # a bug in the plugin's check: a clear 422 naming it, the traceback in the log
        log.exception("%s: validate raised", what)
        raise ValidationError(f"{what} could not check this request: {type(exc).__name__}: {exc}",
                              field=default_field) from exc


def _rooted(field: str | None, root: str | None) -> str | None:
    if not field or root is None or field == root or field.startswith((root + ".", root + "[")):
        return field
    return f"{root}.{field}"


def _document(config: dict[str, Any]) -> dict[str, Any]:
    """A private copy of the config exactly as its JSON document reads (lists, not tuples)."""
    document: dict[str, Any] = json.loads(json.dumps(config))
    return document


def _image_size(config: dict[str, Any]) -> Sequence[int] | None:
    size = (config.get("data") or {}).get("image_size")
    return size if isinstance(size, (list, tuple)) and len(size) == 2 else None
