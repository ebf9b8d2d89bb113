"""A pickle that runs code when loaded carelessly: proves a loader never executes it."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any


class _CreatesMarker:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        # Unpickling this calls open(marker, "w"): the marker file appears only if the pickle ran.
        return (open, (str(self.marker), "w"))


def write_evil_pickle(path: Path, marker: Path) -> Path:
    """Write to ``path`` a checkpoint-looking pickle whose loading would create ``marker``."""
    payload = {"state_dict": {}, "epoch": 0, "hyper_parameters": _CreatesMarker(marker)}
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump(payload, handle)
    return path
