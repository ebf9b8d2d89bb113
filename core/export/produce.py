"""Running an exporter plugin: its file, and first its base format's when it declares one.

An exporter with a ``base_format`` transforms another format's file (an int8
quantiser of the ONNX export). The base exporter runs first, into
``<out_dir>/base``, with its own options, and its file is verified against
PyTorch under its own policy; then the derived exporter is called as
``export(model, example_input, options, <out_dir>/derived, metadata,
base_file=<the base file>)`` and must write a new file into its own folder.
The export worker (``worker.py``) and ``modelyard.testing.check_exporter`` both
run exporters through here, so a plugin author's check sees what the server does.

Why a ``base_file`` keyword on ``export`` rather than a separate
``transform(base_file, ...)``: one callable keeps one contract (the same
options, folder and metadata, the same "write inside ``out_dir``, return the
path" rule), and a transform that needs the network as well as the file (a
static quantiser calibrating on the example input) has it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ModelyardError
from ..plugin_types import Exporter, ExportMetadata

#: ``verify(exporter, file, its own options) -> verification dict`` (``passed`` decides).
Verify = Callable[[Exporter, Path, dict[str, Any]], dict[str, Any]]


def export_file(exporter: Exporter, model: Any, example: Any, options: dict[str, Any], out_dir: Path,
                metadata: ExportMetadata, **keywords: Any) -> Path:
    """``exporter.export(...)``; the path it returns must be a file inside ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    produced = Path(exporter.export(model, example, options, out_dir, metadata, **keywords))
    if not produced.is_file() or not produced.resolve().is_relative_to(out_dir.resolve()):
        raise ModelyardError(f"the {exporter.id} exporter did not write its file into the export folder")
    return produced


def export_with_base(exporter: Exporter, base: Exporter | None, model: Any, example: Any, options: dict[str, Any],
                     base_options: dict[str, Any], out_dir: Path, metadata: ExportMetadata,
                     verify: Verify) -> tuple[Path, dict[str, Any] | None]:
    """The exporter's file, and the base file's verification (``None`` without a ``base``).

    Without a base the exporter writes into ``out_dir`` itself, as it always did.
    """
    if base is None:
        return export_file(exporter, model, example, options, out_dir, metadata), None
    base_file = export_file(base, model, example, base_options, out_dir / "base", metadata)
    base_verification = {**verify(base, base_file, base_options), "format": base.id}
    produced = export_file(exporter, model, example, options, out_dir / "derived", metadata, base_file=base_file)
    return produced, base_verification


def with_base(verification: dict[str, Any], base: dict[str, Any] | None, summary: str | None = None) -> dict[str, Any]:
    """The derived file's verification holding the base's as ``base``; a base that failed fails the export too.

    ``summary`` is the base comparison in words, used when it failed without a ``problem`` sentence.
    """
    if base is None:
        return verification
    merged = {**verification, "base": base}
    if not base.get("passed"):
        why = base.get("problem") or summary or "it does not match PyTorch"
        problem = f"the base {base.get('format')} export failed its own verification ({why})"
        merged["passed"] = False
        merged["problem"] = "; ".join(p for p in (problem, verification.get("problem")) if p)
    return merged
