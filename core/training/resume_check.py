"""Which checkpoint a resume can continue from, checked before the run is queued again.

A checkpoint is only ever read with ``torch.load(weights_only=True)``, so a
planted pickle cannot run code: it fails to load like any torn file. A torn
or foreign ``last.ckpt`` falls back to a loadable ``best.ckpt``; when neither
loads the resume is refused with the reason instead of failing in the worker.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CheckpointError

#: The name other modules import (evaluation, export); the error itself lives in ``core.errors``.
CheckpointProblem = CheckpointError

LAST = "last.ckpt"
BEST = "best.ckpt"
CORRUPT_SUFFIX = ".corrupt"


def load_checkpoint(path: Path, *, mmap: bool = False) -> dict[str, Any]:
    """Load a Lightning checkpoint safely (plain data only) or raise ``CheckpointError`` saying why.

    ``mmap`` maps the file instead of reading it: the tensors are read when
    used (a reader that needs only the weights skips the optimizer state).
    """
    import pickle

    import torch

    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, TypeError, AttributeError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path.name} cannot be loaded safely ({first_line[:200]})", {"file": path.name}) from exc
    if not isinstance(data, dict) or "state_dict" not in data or not isinstance(data.get("epoch"), int):
        raise CheckpointError(f"{path.name} is not a Lightning checkpoint", {"file": path.name})
    return data


def epochs_done(checkpoint: dict[str, Any]) -> int:
    """Epochs fully trained when the checkpoint was written (Lightning's fit-loop progress)."""
    try:
        return int(checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])
    except (KeyError, TypeError, ValueError):
        return int(checkpoint["epoch"]) + 1


@dataclass
class ResumeCheckpoint:
    folder: Path
    epochs_done: int
    fallback_from: str | None = None  # set when last.ckpt was unusable and best.ckpt stands in

    def promote_to_last(self) -> None:
        """Make ``best.ckpt`` the resume point: keep the broken ``last.ckpt`` aside, copy best over it atomically."""
        last, best = self.folder / LAST, self.folder / BEST
        with contextlib.suppress(FileNotFoundError):
            os.replace(last, self.folder / (LAST + CORRUPT_SUFFIX))
        temp = self.folder / f".tmp-{LAST}"
        shutil.copyfile(best, temp)
        os.replace(temp, last)


def usable_checkpoint(folder: Path) -> ResumeCheckpoint | None:
    """The checkpoint to resume from; ``None`` when the run never wrote one.

    Raises ``CheckpointError`` when checkpoints exist but none loads.
    """
    problems: list[str] = []
    for name in (LAST, BEST):
        path = folder / name
        if not path.is_file() or path.is_symlink():
            continue
        try:
            checkpoint = load_checkpoint(path)
        except CheckpointError as exc:
            problems.append(exc.message)
            continue
        return ResumeCheckpoint(folder, epochs_done(checkpoint), fallback_from=None if name == LAST else LAST)
    if problems:
        raise CheckpointError("; ".join(problems), {"problems": problems})
    return None
