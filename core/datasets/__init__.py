"""Datasets and splits: import (staging and commit), ``dataset.json`` store, in-memory index, thumbnails, splits.

``DatasetService`` and ``SplitService`` are what the API and the CLI call; the
modules below them each do one job (validate a file, extract a ZIP safely,
name files, assign splits, index a dataset for fast listing).
"""

from .service import DatasetService
from .split_service import SplitService

__all__ = ["DatasetService", "SplitService"]
