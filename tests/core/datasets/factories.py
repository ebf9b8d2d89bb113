"""Real files for dataset tests: Pillow images, hostile PNGs, image folders and ZIPs (benign and hostile)."""

from __future__ import annotations

import io
import stat
import struct
import zipfile
import zlib
from pathlib import Path

from PIL import Image

from modelyard.core.sample_data import generate_shapes


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (16, 12), mode: str = "RGB", colour: int = 0, **save: object) -> bytes:
    """A small real image; ``colour`` varies the pixels so images differ (and hash differently)."""
    fill: object
    if mode in ("L", "P"):
        fill = colour % 256
    elif mode == "RGBA":
        fill = (colour % 256, 100, 50, 128)
    else:
        fill = (colour % 256, (colour * 7) % 256, 200)
    image = Image.new(mode, size, fill)  # type: ignore[arg-type]
    image.putpixel((0, 0), (255, 255, 255, 255) if mode == "RGBA" else (255 if mode in ("L", "P") else (255, 255, 255)))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)  # type: ignore[arg-type]
    return buffer.getvalue()


def jpeg_with_orientation(size: tuple[int, int], orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return image_bytes("JPEG", size=size, exif=exif.tobytes())


def animated_gif(frames: int = 3, size: tuple[int, int] = (10, 8)) -> bytes:
    images = [Image.new("P", size, i * 40) for i in range(frames)]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=50)
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels but holds almost no data (a decompression bomb)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def shapes_folder(root: Path, per_class: int = 3, shapes: tuple[str, ...] = ("circle", "square"), seed: int = 0) -> Path:
    """``root/<shape>/<shape>_<i>.png`` at 16 px (real generated images)."""
    generate_shapes(root, per_class=per_class, size=16, seed=seed, shapes=shapes)
    return root


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    """A ZIP with these entries (names written exactly as given, even hostile ones)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return buffer.getvalue()


def zip_of_folder(folder: Path, prefix: str = "") -> bytes:
    return zip_bytes({prefix + p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()})


def zip_with_symlink(name: str, target: str, extra: dict[str, bytes] | None = None) -> bytes:
    """A ZIP holding a Unix symlink entry ``name -> target`` (as ``zip --symlinks`` writes it)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for entry, data in (extra or {}).items():
            archive.writestr(entry, data)
        info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
        info.create_system = 3
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, target)
    return buffer.getvalue()


def zip_bomb(uncompressed: int) -> bytes:
    """One entry of ``uncompressed`` zero bytes, deflated to a few KiB."""
    buffer = io.BytesIO()
    info = zipfile.ZipInfo("bomb/zeros.png", date_time=(2024, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(buffer, "w") as archive:
        with archive.open(info, "w", force_zip64=True) as entry:
            block = bytes(1024 * 1024)
            for _ in range(uncompressed // len(block)):
                entry.write(block)
    return buffer.getvalue()


def many_entries_zip(count: int) -> bytes:
    """A ZIP of ``count`` empty stored entries, built directly (fast even for 100,000 entries)."""
    local = bytearray()
    central = bytearray()
    empty_crc = 0
    for i in range(count):
        name = f"d/{i:06d}.png".encode()
        offset = len(local)
        local += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 0, 0, 0x21, empty_crc, 0, 0, len(name), 0) + name
        central += (
            struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 0, 0, 0x21, empty_crc, 0, 0, len(name), 0, 0, 0, 0, 0, offset)
            + name
        )
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, min(count, 0xFFFF), min(count, 0xFFFF), len(central), len(local), 0)
    return bytes(local + central + end)
