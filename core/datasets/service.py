"""``DatasetService``: import (local folder or ZIP), describe, list, serve and clear a project's dataset.

The import runs in two halves: staging (reading and validating every file,
outside the lock, so a long import does not block readers) and commit (under
the project lock). Whatever happens, the staging folder is removed.
"""

from __future__ import annotations

import logging
import math
import re
import shutil
from pathlib import Path
from typing import Any

import msgspec

from ..errors import ConflictError, ImageNotFoundError, UnknownImporterError, ValidationError
from ..plugin_types import DatasetImporter, tasks_of
from ..projects import ensure_no_active_run
from ..records import Dataset, DatasetSource, ImageStats
from ..registry import ImporterRegistry, TaskRegistry
from ..settings import Settings
from ..storage import translate_storage_full
from ..timeutil import utc_now_iso
from ..workspace import Workspace
from .append import append_import
from .commit import merge_import
from .document import SPLIT_VALUES, empty_dataset
from .index import SORT_KEYS, DatasetIndex, IndexedAnnotation, IndexedImage, release_free_memory
from .kinds import annotates_boxes
from .staging import Staged, stage_records
from .sources import resolve_local_source
from .store import DatasetStore
from .thumbnails import THUMB_SIZE, cached_thumbnail, make_thumbnail
from .validate import MEDIA_TYPES
from .zipsafe import extract_zip

log = logging.getLogger(__name__)

MAX_PAGE_SIZE = 500
_SPLIT_FILTER = re.compile(r"^(\d{1,6}):(" + "|".join(SPLIT_VALUES) + r")$")


class DatasetService:
    def __init__(self, workspace: Workspace, store: DatasetStore, importers: ImporterRegistry, settings: Settings,
                 tasks: TaskRegistry | None = None) -> None:
        self.workspace = workspace
        self.store = store
        self.importers = importers
        self.settings = settings
        #: the registered tasks: a task whose annotations are boxes makes a detection dataset (``kinds.py``)
        self.tasks = tasks
        #: a non-replace import is appended to ``dataset.json`` streamed when it can be (``append.py``); ``False``:
        #: every import reads and writes the whole document (what the benchmarks compare against)
        self.append_streamed = True

    # -- import ----------------------------------------------------------------
    def import_local(self, project_id: str, path: str, format: str = "auto", replace: bool = False) -> dict[str, Any]:
        """Import the folder ``path`` (inside an import root) into the project."""
        self.check_import_allowed(project_id)
        root = resolve_local_source(path, self.settings.import_roots)
        staging = self.workspace.new_staging_dir(f"import-{project_id}")
        try:
            with translate_storage_full("the imported images"):  # staging is removed below; the dataset is untouched
                return self._import(project_id, root, staging, "local", format, replace)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def import_zip(self, project_id: str, archive: Path, format: str = "auto", replace: bool = False) -> dict[str, Any]:
        """Extract the uploaded ZIP ``archive`` safely and import it; the archive itself is left to the caller."""
        self.check_import_allowed(project_id)
        staging = self.workspace.new_staging_dir(f"import-{project_id}")
        try:
            with translate_storage_full("the imported images"):  # staging is removed below; the dataset is untouched
                root = extract_zip(
                    archive,
                    staging / "extracted",
                    max_entries=self.settings.zip_max_entries,
                    max_bytes=self.settings.zip_max_uncompressed_bytes,
                )
                return self._import(project_id, root, staging, "upload", format, replace)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def check_import_allowed(self, project_id: str) -> None:
        """Fail fast (before an upload is received) when the project is missing or training."""
        self.workspace.existing_project_dir(project_id)
        ensure_no_active_run(self.workspace, project_id, "import images")

    def _import(self, project_id: str, root: Path, staging: Path, kind: str, format: str, replace: bool) -> dict[str, Any]:
        task = self.store.task(project_id)
        importer = self._importer(root, format, task)
        from ..plugin_checks import check_importer_source

        check_importer_source(importer, root, task, field="path" if kind == "local" else "file")  # its validate(root)
        log.info("importing %s into %s with the %s importer", root, project_id, importer.id)
        staged = stage_records(importer.read(root), root, staging / "files", self.settings.max_image_pixels, importer.id)
        if not staged.images and not staged.duplicates:
            raise ValidationError(
                f"No importable images found ({len(staged.skipped)} file(s) skipped)",
                field="path" if kind == "local" else "file",
                details={"skipped": staged.skipped[:100], "skipped_count": len(staged.skipped)},
            )
        source = {"kind": kind, "format": importer.id, "imported_at": utc_now_iso()}
        with self.workspace.project_lock(project_id):
            if self.store.task(project_id) != task:
                raise ConflictError("The project's task changed during the import; import again", {"project_id": project_id})
            ensure_no_active_run(self.workspace, project_id, "import images")
            summary = None if replace or not self.append_streamed else self._append(project_id, staged, source, task)
            if summary is None:
                doc = empty_dataset(task) if replace else self.store.load(project_id)
                summary = merge_import(doc, staged, replace, source, self.store.paths(project_id),
                                       annotates_boxes=annotates_boxes(self.tasks, task))
        log.info("imported %d image(s) into %s (%d skipped, %d duplicates)", summary["imported"], project_id,
                 len(summary["skipped"]), len(summary["duplicates"]))
        return {**summary, "format": importer.id}

    def _append(self, project_id: str, staged: Staged, source: dict[str, Any], task: str) -> dict[str, Any] | None:
        """The import appended to ``dataset.json`` streamed (``append.py``), its index adopted; ``None`` when it cannot be."""
        index = self.store.streamable_index(project_id)
        if index is None:
            return None
        done = append_import(index, staged, source, self.store.paths(project_id),
                             annotates_boxes=annotates_boxes(self.tasks, task))
        if done is None:
            return None
        summary, appended = done
        if appended is not None:
            self.store.adopt_index(project_id, appended)
            del index, appended
            release_free_memory()
        return summary

    def _importer(self, root: Path, format: str, task: str) -> DatasetImporter:
        """The importer named by ``format``, or the first that recognises ``root``: only importers serving ``task``."""
        serving = [importer.id for importer in self.importers.for_task(task)]
        if format != "auto":
            if format not in self.importers:
                raise UnknownImporterError(format, serving, field="format")
            importer = self.importers.get(format, field="format")
            if task not in tasks_of(importer):
                raise ValidationError(
                    f"The '{format}' importer does not read {task} datasets; use one of: {', '.join(serving) or 'none'}",
                    field="format", details={"available": serving, "task": task},
                )
            return importer
        found = self.importers.detect(root, task)
        if found is None:
            raise ValidationError("No importer recognises this folder; name one in 'format'", field="format",
                                  details={"available": serving, "task": task})
        return found

    # -- reading -----------------------------------------------------------------
    def info(self, project_id: str) -> Dataset:
        """Classes, counts, image statistics, split names and source of the dataset (empty before any import)."""
        index = self.store.index(project_id)
        boxes = annotates_boxes(self.tasks, index.task)
        return Dataset(
            task=index.task,
            classes=list(index.classes),
            class_counts=index.class_counts(),
            num_images=len(index),
            num_unlabelled=0 if boxes else int((index.class_codes < 0).sum()),
            image_stats=msgspec.convert(index.image_stats, ImageStats, strict=False),
            split_names=list(index.split_names),
            source=msgspec.convert(index.source, DatasetSource, strict=False) if index.source else None,
            **({"class_image_counts": index.class_image_counts(), "num_boxes": int(index.box_counts.sum()),
                "num_background": int((index.box_counts == 0).sum())} if boxes else {}),
        )

    def list_images(
        self,
        project_id: str,
        page: int = 1,
        page_size: int = 50,
        sort_by: str = "filename",
        sort_order: str = "asc",
        filter_class: str | None = None,
        filter_split: str | None = None,
        search: str | None = None,
    ) -> dict[str, Any]:
        """One page of images (DESIGN section 2 pagination); ``filter_split`` is ``<split index>:<subset>``."""
        if page < 1:
            raise ValidationError("page must be at least 1", field="page")
        if page_size < 1:
            raise ValidationError("page_size must be at least 1", field="page_size")
        if sort_by not in SORT_KEYS:
            raise ValidationError(f"sort_by must be one of {', '.join(SORT_KEYS)}", field="sort_by")
        if sort_order not in ("asc", "desc"):
            raise ValidationError("sort_order must be asc or desc", field="sort_order")
        page_size = min(page_size, MAX_PAGE_SIZE)
        index = self.store.index(project_id)
        selected = index.select(sort_by, sort_order == "desc", filter_class, _parse_split_filter(filter_split, index), search)
        start = (page - 1) * page_size
        boxes = annotates_boxes(self.tasks, index.task)
        items = index.list_items(selected[start : start + page_size], boxes)
        total = len(selected)
        return {"items": items, "page": page, "page_size": page_size, "total": total, "pages": math.ceil(total / page_size)}

    def image(self, project_id: str, filename: str) -> tuple[Path, dict[str, Any]]:
        """The stored file of a dataset image and its media type and hash (names are looked up, never joined raw)."""
        image = self._lookup(self.store.index(project_id), filename)
        path = self.workspace.images_dir(project_id) / image.filename
        if not path.is_file():
            raise ImageNotFoundError(f"The file of image {image.filename} is missing", {"filename": image.filename})
        return path, {"media_type": MEDIA_TYPES.get(image.format, "application/octet-stream"), "sha256": image.sha256}

    def image_info(self, project_id: str, filename: str) -> dict[str, Any]:
        """The image's record with its annotations."""
        index = self.store.index(project_id)
        image = self._lookup(index, filename)
        annotations = [_annotation(annotation) for annotation in image.annotations]
        return {**_list_item(image, annotates_boxes(self.tasks, index.task)), "sha256": image.sha256,
                "annotations": annotations, "source_subset": image.source_subset}

    def thumbnail(self, project_id: str, filename: str) -> tuple[Path, dict[str, Any]]:
        """The cached thumbnail of an image, made on first request."""
        source, meta = self.image(project_id, filename)
        thumbs = self.workspace.thumbs_dir(project_id)
        key = meta["sha256"]  # content-addressed: a cached thumbnail can never belong to an older file of that name
        found = cached_thumbnail(thumbs, key) or make_thumbnail(source, thumbs, key)
        return found[0], {"media_type": found[1], "sha256": meta["sha256"], "size": THUMB_SIZE}

    # -- clearing ----------------------------------------------------------------
    def clear(self, project_id: str) -> None:
        """Remove images, thumbnails and ``dataset.json`` (refused while a run of the project is training)."""
        with self.workspace.project_lock(project_id):
            self.workspace.existing_project_dir(project_id)
            ensure_no_active_run(self.workspace, project_id, "clear the dataset")
            folder = self.workspace.dataset_dir(project_id)
            if not folder.exists():
                return
            trash = self.workspace.new_staging_dir(f"clear-{project_id}")
            folder.rename(trash / "dataset")  # one rename: readers see the whole dataset or none
        shutil.rmtree(trash, ignore_errors=True)

    @staticmethod
    def _lookup(index: DatasetIndex, filename: str) -> IndexedImage:
        position = index.by_name.get(filename)
        if position is None:
            shown = filename if len(filename) <= 200 else filename[:200] + "..."
            raise ImageNotFoundError(f"Image {shown!r} is not in the dataset", {"filename": shown})
        return index.images[position]


def _parse_split_filter(value: str | None, index: DatasetIndex) -> tuple[int, str] | None:
    if value is None or value == "":
        return None
    match = _SPLIT_FILTER.match(value)
    if match is None:
        raise ValidationError("filter_split must look like <split index>:<train|val|test|none>, e.g. 0:train",
                              field="filter_split")
    split_index = int(match.group(1))
    if split_index >= len(index.split_names):
        raise ValidationError(f"filter_split names split {split_index}, but the dataset has {len(index.split_names)}",
                              field="filter_split")
    return split_index, match.group(2)


def _annotation(annotation: IndexedAnnotation) -> dict[str, Any]:
    """An annotation as stored: a ``bbox`` only on box annotations."""
    found = msgspec.structs.asdict(annotation)
    if found.get("bbox") is None:
        found.pop("bbox", None)
    else:
        found["bbox"] = list(found["bbox"])
    return found


def _list_item(image: IndexedImage, boxes: bool = False) -> dict[str, Any]:
    """A listed image; in a detection dataset it also says how many boxes it has."""
    item = {
        "filename": image.filename,
        "class_name": image.class_name,
        "width": image.width,
        "height": image.height,
        "size": image.size,
        "format": image.format,
        "source_path": image.source_path,
        "split": list(image.split),
    }
    if boxes:
        item["num_boxes"] = image.num_boxes
    return item
