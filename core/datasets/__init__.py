"""Datasets and splits: import (staging and commit), ``dataset.json`` store, in-memory index, thumbnails, splits.

``DatasetService`` and ``SplitService`` are what the API and the CLI call; the
modules below them each do one job (validate a file, extract a ZIP safely,
name files, assign splits, index a dataset for fast listing).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .service import DatasetService
    from .split_service import SplitService

__all__ = ["DatasetService", "SplitService"]


def __getattr__(name: str) -> Any:
    """The services load on first use, so ``modelyard.core`` (which exports ``files.py``'s helpers) stays light."""
    if name == "DatasetService":
        from .service import DatasetService

        return DatasetService
    if name == "SplitService":
        from .split_service import SplitService

        return SplitService
    raise AttributeError(name)
