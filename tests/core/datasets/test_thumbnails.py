"""Thumbnails: longest side 256, cached on first request, never torn by concurrent first requests."""

from __future__ import annotations

import io
import threading
from pathlib import Path

from PIL import Image

from modelyard.core.services import Services
from tests.core.datasets.factories import image_bytes, jpeg_with_orientation, write


def test_thumbnail_is_256_on_the_longest_side_and_cached(services: Services, project: str, import_root: Path) -> None:
    write(import_root / "set" / "cat" / "wide.png", image_bytes(size=(400, 100)))
    services.datasets.import_local(project, str(import_root / "set"))
    path, meta = services.datasets.thumbnail(project, "cat_wide.png")
    assert meta["media_type"] == "image/jpeg" and path.parent == services.workspace.thumbs_dir(project)
    with Image.open(path) as thumb:
        assert (thumb.format, thumb.size) == ("JPEG", (256, 64))
    mtime = path.stat().st_mtime_ns
    assert services.datasets.thumbnail(project, "cat_wide.png")[0].stat().st_mtime_ns == mtime


def test_small_images_are_not_enlarged_and_exif_orientation_is_applied(services: Services, project: str,
                                                                        import_root: Path) -> None:
    write(import_root / "set" / "cat" / "turned.jpg", jpeg_with_orientation((30, 10), 6))
    services.datasets.import_local(project, str(import_root / "set"))
    path, _meta = services.datasets.thumbnail(project, "cat_turned.jpg")
    with Image.open(path) as thumb:
        assert thumb.size == (10, 30)


def test_transparent_images_get_webp_thumbnails(services: Services, project: str, import_root: Path) -> None:
    write(import_root / "set" / "cat" / "alpha.png", image_bytes(size=(300, 300), mode="RGBA"))
    services.datasets.import_local(project, str(import_root / "set"))
    path, meta = services.datasets.thumbnail(project, "cat_alpha.png")
    assert meta["media_type"] == "image/webp"
    with Image.open(path) as thumb:
        assert (thumb.format, thumb.mode, thumb.size) == ("WEBP", "RGBA", (256, 256))


def test_concurrent_first_requests_leave_one_whole_thumbnail(services: Services, project: str, import_root: Path) -> None:
    write(import_root / "set" / "cat" / "big.png", image_bytes(size=(600, 500), colour=9))
    services.datasets.import_local(project, str(import_root / "set"))
    barrier = threading.Barrier(8)
    results: list[bytes] = []
    errors: list[BaseException] = []

    def first_request() -> None:
        try:
            barrier.wait()
            path, _meta = services.datasets.thumbnail(project, "cat_big.png")
            results.append(path.read_bytes())
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=first_request) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    cached = list(services.workspace.thumbs_dir(project).iterdir())
    assert len(cached) == 1 and not cached[0].name.startswith(".tmp-")
    for data in results:
        with Image.open(io.BytesIO(data)) as thumb:
            thumb.load()
            assert thumb.size == (256, 213)
