"""Contract checks a plugin author runs in their own tests (and modelyard runs on its built-ins).

Each ``check_*`` exercises a registered object the way modelyard will, and
raises ``AssertionError`` with a message saying what broke::

    from modelyard.testing import check_architecture, registered
    from my_plugin import plugin

    def test_my_architecture_honours_the_contract():
        check_architecture(registered(plugin).architectures.get("my_net"), input_size=(32, 32))

The checks use real tensors and real files, so they are slow only if the
model is: pick a small ``input_size``. ``check_installed(name)`` checks the
installed package: its entry point loads the way the server loads it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from modelyard.core import Architecture, Exporter, ExportMetadata, ImageRecord
from modelyard.core.export_options import option_defaults, resolve_options
from modelyard.core.plugin_manager import PluginHost


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """Run torch on one intra-op thread for the block.

    The checks use batches of one or two tiny images, where thread start-up
    costs more than it saves; on a busy machine (parallel test runs) spinning
    OpenMP threads make such steps 10-50x slower.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def registered(plugin: ModuleType | object, name: str = "plugin-under-test") -> PluginHost:
    """A fresh host holding only ``plugin``; raises if it failed to load or register."""
    host = PluginHost(disabled=set())
    host.add_plugin(plugin, name=name)
    info = host.plugins[name]
    _require(info.error is None, f"plugin {name} failed: {info.error}")
    return host


def check_installed(name: str) -> dict[str, Any]:
    """The plugin ``name`` is installed and loads the way the server loads it; returns its plugins-listing row.

    A fresh host loads the built-ins and every entry point of the group
    ``modelyard`` (``MODELYARD_DISABLE_PLUGINS`` is not honoured here); the
    plugin must be listed once, with status ``loaded``. The row is what
    ``GET /api/system/plugins`` shows: ``registered`` says what it added.
    """
    rows = [row for row in PluginHost(disabled=set()).load_all().describe() if row["name"] == name]
    _require(bool(rows), f"no plugin {name!r} is installed: no entry point of that name in the group 'modelyard' "
                         f"(install the package first, e.g. pip install -e .)")
    for row in rows:  # a second distribution providing the name is listed too, as failed
        _require(row["status"] == "loaded", f"plugin {name} from {row['source']} is {row['status']}: {row['error']}")
    return rows[0]


def check_architecture(
    arch: Architecture,
    num_classes: Iterable[int] = (3, 10),
    input_size: tuple[int, int] | None = None,
    batch: int = 2,
    in_channels: int = 3,
) -> None:
    """Build ``arch`` for each class count, run forward and backward on a random batch.

    Checks: metadata is sane, ``build`` returns an ``nn.Module`` whose output is
    finite ``(batch, num_classes)`` logits in train and eval mode, every
    parameter that requires grad gets a gradient, and ``head_name`` (when
    declared) names a sub-module holding parameters. ``build`` receives the
    ``image_size`` option, which every architecture must accept.
    """
    with single_threaded():
        _check_architecture(arch, tuple(num_classes), input_size, batch, in_channels)


def _check_architecture(
    arch: Architecture, num_classes: tuple[int, ...], input_size: tuple[int, int] | None, batch: int, in_channels: int
) -> None:
    import torch
    from torch import nn

    _require(isinstance(arch, Architecture), f"{arch!r} is not an Architecture")
    _require(bool(arch.tasks) and all(isinstance(t, str) for t in arch.tasks), f"{arch.name}: tasks must be non-empty strings")
    size = tuple(input_size or arch.default_input_size)
    _require(len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size), f"{arch.name}: bad input size {size}")
    for classes in num_classes:
        torch.manual_seed(0)
        model = arch.build(classes, in_channels=in_channels, pretrained=False, dropout=0.0, image_size=size)
        _require(isinstance(model, nn.Module), f"{arch.name}: build returned {type(model).__name__}, not nn.Module")
        model.train()
        x = torch.randn(batch, in_channels, *size)
        out = model(x)
        _require(isinstance(out, torch.Tensor), f"{arch.name}: forward returned {type(out).__name__}, not a Tensor")
        _require(tuple(out.shape) == (batch, classes), f"{arch.name}: output shape {tuple(out.shape)}, expected {(batch, classes)}")
        _require(bool(torch.isfinite(out).all()), f"{arch.name}: output has NaN or inf")
        out.float().logsumexp(dim=1).mean().backward()
        no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
        _require(not no_grad, f"{arch.name}: parameters got no gradient: {no_grad[:5]}")
        if arch.head_name:
            try:
                head = model.get_submodule(arch.head_name)
            except AttributeError:
                raise AssertionError(f"{arch.name}: head_name {arch.head_name!r} is not a sub-module") from None
            _require(any(True for _ in head.parameters()), f"{arch.name}: head {arch.head_name!r} has no parameters")
        model.eval()
        with torch.no_grad():
            out = model(x[:1])
        _require(tuple(out.shape) == (1, classes), f"{arch.name}: eval output shape {tuple(out.shape)}")


def check_importer(importer: Any, root: Path, expected: Mapping[str, str | None] | None = None) -> list[ImageRecord]:
    """``importer`` recognises ``root`` and reads well-formed records; compare to ``expected``.

    ``expected`` maps each record's ``source_path`` to its label (``None`` =
    unlabelled). Records may name missing files or files outside ``root``
    (the import pipeline checks and skips those); they must not be malformed.
    Returns the records for further checks.
    """
    for attr in ("id", "name", "detect", "read"):
        _require(hasattr(importer, attr), f"importer {importer!r} lacks {attr!r}")
    root = Path(root)
    _require(importer.detect(root) is True, f"importer {importer.id} does not detect {root}")
    records = list(importer.read(root))
    for record in records:
        _require(isinstance(record, ImageRecord), f"{importer.id}: read yielded {type(record).__name__}, not ImageRecord")
        _require(not record.source_path.startswith("/") and "\\" not in record.source_path,
                 f"{importer.id}: source_path {record.source_path!r} must be relative with '/' separators")
        _require(record.subset in (None, "train", "val", "test"), f"{importer.id}: bad subset {record.subset!r}")
        _require(record.label is None or (isinstance(record.label, str) and record.label != ""),
                 f"{importer.id}: label must be a non-empty string or None, got {record.label!r}")
        _require(Path(record.path).is_absolute(), f"{importer.id}: path {record.path} is not absolute")
    if expected is not None:
        got = {record.source_path: record.label for record in records}
        _require(got == dict(expected), f"{importer.id}: read {got}, expected {dict(expected)}")
    return records


def _tiny_model(in_channels: int, classes: int) -> Any:
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(in_channels, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, classes),
    )


def check_exporter(
    exporter: Exporter,
    tmp_dir: Path,
    options: Mapping[str, Any] | None = None,
    model: Any = None,
    input_size: tuple[int, int] = (16, 16),
    atol: float | None = None,
    batch: int = 2,
    base: Exporter | None = None,
) -> Path:
    """Export a model (a tiny CNN by default) and run it back through ``load_runner``, as the server would.

    Checks: the declaration the registry checks (``extension``,
    ``verification``, ``base_format``, ``usage_snippet``), the options schema
    gives every property a default and accepts them, the file has the declared
    extension and the server saves it under exactly that extension, and the
    runner's logits for a batch of ``batch`` (the export itself traces one
    image; use ``batch=1`` for formats with a static batch size) pass the
    exporter's own ``VerificationPolicy``, through the comparison the server
    uses for classification (``Exporter.verification``; without one,
    modelyard's default: 1e-4 x the logit scale, 1e-2 with an ``fp16: true``
    option, every top-1 class the same).

    An exporter with a ``base_format`` is checked the way the server runs it:
    the base exporter exports and passes its own policy first, then this one
    transforms its file (``export(..., base_file=path)``). ``base`` is that
    exporter; without it, the installed one of that id (the built-in ``onnx``,
    or a plugin's, loaded as the server loads them).

    ``atol`` is deprecated and ignored (a ``DeprecationWarning``): the server
    applies the exporter's policy, so the check does too; declare
    ``Exporter.verification`` instead. Returns the exported file.
    """
    if atol is not None:
        import warnings

        warnings.warn("check_exporter(atol=...) is ignored: exports are verified under the exporter's "
                      "VerificationPolicy (Exporter.verification), here as on the server", DeprecationWarning,
                      stacklevel=2)
    with single_threaded():
        return _check_exporter(exporter, Path(tmp_dir), options, model, input_size, batch, base)


def _check_exporter(
    exporter: Exporter,
    tmp_dir: Path,
    options: Mapping[str, Any] | None,
    model: Any,
    input_size: tuple[int, int],
    batch: int,
    base: Exporter | None,
) -> Path:
    import numpy as np
    import torch

    from modelyard.core.errors import ModelyardError
    from modelyard.core.export.produce import export_with_base, with_base
    from modelyard.core.export.service import base_options, model_file_name
    from modelyard.core.export.verify import compare_outputs, effective_policy
    from modelyard.core.plugin_types import exporter_problems
    from modelyard.core.registry import base_format_problems

    _require(isinstance(exporter, Exporter), f"{exporter!r} is not an Exporter")
    problems = exporter_problems(exporter)
    _require(not problems, f"{exporter.id}: {'; '.join(problems)}")
    saved_as = model_file_name("check_exporter", "run-00000000", exporter.extension)
    _require(saved_as.endswith(exporter.extension), f"{exporter.id}: the server would save {saved_as}, "
                                                    f"not a name ending in {exporter.extension}")
    properties = exporter.options_schema.get("properties", {})
    no_default = [name for name, prop in properties.items() if "default" not in prop]
    _require(not no_default, f"{exporter.id}: options without a default: {no_default}")
    resolved = resolve_options(exporter, option_defaults(exporter.options_schema))
    resolved = resolve_options(exporter, {**resolved, **dict(options or {})})
    if exporter.base_format is not None:
        if base is None:
            installed = PluginHost(disabled=set()).load_all().exporters
            _require(exporter.base_format in installed,
                     f"{exporter.id}: its base_format {exporter.base_format!r} is not installed (pass base=...)")
            base = installed.get(exporter.base_format)
        _require(base.id == exporter.base_format, f"{exporter.id}: base {base.id!r} is not its base_format "
                                                  f"{exporter.base_format!r}")
        wrong_base = base_format_problems(exporter, base)
        _require(not wrong_base, f"{exporter.id}: {'; '.join(wrong_base)}")
    else:
        base = None
    base_own = base_options(base, resolved) if base is not None else {}
    torch.manual_seed(0)
    classes = ["a", "b", "c"]
    model = model if model is not None else _tiny_model(3, len(classes))
    model.eval()
    x = torch.randn(batch, 3, *input_size)
    with torch.no_grad():
        expected = model(x).numpy()
    metadata = ExportMetadata(
        classes=classes, input_size=input_size, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25],
        architecture="check_exporter", run_id="run-00000000",
    )

    def verify(fmt: Exporter, path: Path, fmt_options: dict[str, Any]) -> dict[str, Any]:
        predict = fmt.load_runner(path, fmt_options)
        got = np.asarray(predict(x.numpy()))
        _require(got.shape == expected.shape, f"{fmt.id}: runner output shape {got.shape}, expected {expected.shape}")
        policy, source = effective_policy(fmt, fmt_options)
        return {**compare_outputs(expected, got, policy=policy), "policy": {"source": source, **policy.as_dict()}}

    out_dir = Path(tmp_dir) / f"export-{exporter.id}"
    try:
        path, base_verification = export_with_base(exporter, base, model, x[:1], resolved, base_own, out_dir, metadata,
                                                   verify)
    except ModelyardError as exc:
        raise AssertionError(f"{exporter.id}: {exc}") from exc
    _require(path.name.endswith(exporter.extension), f"{exporter.id}: {path.name} lacks extension {exporter.extension}")
    verification = with_base(verify(exporter, path, resolved), base_verification)
    _require(bool(verification["passed"]),
             f"{exporter.id}: the exported file does not pass its verification policy "
             f"{verification['policy']}: {verification.get('problem') or _numbers(verification)}")
    return path


def _numbers(verification: Mapping[str, Any]) -> str:
    return (f"runner differs from PyTorch by {verification.get('max_abs_diff')} (tolerance "
            f"{verification.get('tolerance')}), top-1 agreement {verification.get('top1_agreement')}")
