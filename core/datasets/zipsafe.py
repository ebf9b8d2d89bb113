"""Extract an untrusted ZIP into a staging folder, or refuse it.

Every entry name is checked before anything is written: no absolute path,
drive letter, backslash, ``..``, NUL or empty segment, no symlink or other
special entry, no encrypted entry, and no two names that differ only in case
(or a file that is also a folder). Limits on the number of entries and on the
uncompressed bytes are counted while extracting (what is really written,
never what the headers claim). Files are created with ``O_EXCL|O_NOFOLLOW``
inside a folder we created, so nothing can land outside it.
"""

from __future__ import annotations

import os
import re
import stat
import zipfile
from pathlib import Path

from ..errors import PayloadTooLargeError, ValidationError

CHUNK = 1024 * 1024
IGNORED_TOP_LEVEL = frozenset({"__MACOSX"})
_DRIVE = re.compile(r"^[A-Za-z]:")
_UNIX = 3


class HostileArchiveError(ValidationError):
    """A ZIP entry that could write outside the extraction folder or is otherwise unsafe."""

    def __init__(self, entry: str, reason: str) -> None:
        shown = entry if len(entry) <= 200 else entry[:200] + "..."
        super().__init__(f"Refused ZIP entry {shown!r}: {reason}", field="file", details={"entry": shown, "reason": reason})


def extract_zip(archive: Path, dest: Path, max_entries: int, max_bytes: int) -> Path:
    """Extract ``archive`` into the new folder ``dest``; return the folder to import (see ``import_root``)."""
    dest.mkdir(parents=True, exist_ok=False)
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise ValidationError(f"The upload is not a readable ZIP archive ({exc})", field="file") from None
    with zf:
        seen: dict[str, tuple[str, str]] = {}
        written = 0
        for entries, info in enumerate(zf.infolist(), start=1):
            if entries > max_entries:
                raise PayloadTooLargeError(f"The ZIP has more than {max_entries} entries", {"limit": max_entries, "field": "file"})
            target = dest.joinpath(*_checked_parts(info, seen))
            _make_folder(target if info.is_dir() else target.parent, info)
            if not info.is_dir():
                written = _extract_file(zf, info, target, written, max_bytes)
    return import_root(dest)


def import_root(folder: Path) -> Path:
    """``folder``, or its single top-level sub-folder when everything sits under one.

    A lone folder holding only files (no sub-folder, no CSV) is a one-class
    image folder, not a wrapper, so it is kept as the class folder.
    """
    visible = [p for p in folder.iterdir() if not p.name.startswith(".") and p.name not in IGNORED_TOP_LEVEL]
    if len(visible) != 1 or not visible[0].is_dir() or visible[0].is_symlink():
        return folder
    children = list(visible[0].iterdir())
    if any(c.is_dir() and not c.name.startswith(".") for c in children) or any(c.suffix.lower() == ".csv" for c in children):
        return visible[0]
    return folder


def _checked_parts(info: zipfile.ZipInfo, seen: dict[str, tuple[str, str]]) -> list[str]:
    """The entry's path segments, or ``HostileArchiveError``; ``seen`` maps casefolded paths to (kind, exact path)."""
    raw = info.orig_filename
    if "\x00" in raw:
        raise HostileArchiveError(raw, "NUL character in name")
    if "\\" in raw:
        raise HostileArchiveError(raw, "backslash in name")
    if raw.startswith("/"):
        raise HostileArchiveError(raw, "absolute path")
    if _DRIVE.match(raw):
        raise HostileArchiveError(raw, "drive letter")
    parts = (raw[:-1] if raw.endswith("/") else raw).split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise HostileArchiveError(raw, "empty, '.' or '..' path segment")
    mode = info.external_attr >> 16
    if info.create_system == _UNIX and stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise HostileArchiveError(raw, "symbolic link entry" if stat.S_ISLNK(mode) else "special file entry")
    if info.flag_bits & 0x1:
        raise HostileArchiveError(raw, "encrypted entry")
    for depth in range(1, len(parts) + 1):
        exact = "/".join(parts[:depth])
        kind = "dir" if depth < len(parts) or info.is_dir() else "file"
        previous_kind, previous_exact = seen.setdefault(exact.casefold(), (kind, exact))
        if previous_kind != kind:
            raise HostileArchiveError(raw, "a file and a folder share this name (ignoring case)")
        if previous_exact != exact:
            raise HostileArchiveError(raw, f"collides with {previous_exact!r} (names differ only in case)")
    return parts


def _make_folder(folder: Path, info: zipfile.ZipInfo) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # too long, too deep, or a file already there
        raise HostileArchiveError(info.orig_filename, f"cannot be created ({exc.strerror})") from None


def _extract_file(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, written: int, max_bytes: int) -> int:
    """Copy one entry into ``target``, counting real bytes against ``max_bytes``; returns the new total."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(target, flags, 0o644)
    except FileExistsError:
        raise HostileArchiveError(info.orig_filename, "duplicate entry") from None
    except OSError as exc:
        raise HostileArchiveError(info.orig_filename, f"cannot be created ({exc.strerror})") from None
    with os.fdopen(fd, "wb") as out:
        try:
            source = zf.open(info)
        except (zipfile.BadZipFile, NotImplementedError, ValueError, EOFError) as exc:
            raise _corrupt(info, exc) from None
        with source:
            while True:
                try:
                    chunk = source.read(CHUNK)
                except Exception as exc:  # decompressors raise zlib.error, BadZipFile (CRC), OSError (bz2), EOFError...
                    raise _corrupt(info, exc) from None
                if not chunk:
                    break
                written += len(chunk)
                if written > max_bytes:
                    raise PayloadTooLargeError(f"The ZIP expands to more than {max_bytes} bytes", {"limit": max_bytes, "field": "file"})
                out.write(chunk)
    return written


def _corrupt(info: zipfile.ZipInfo, exc: Exception) -> ValidationError:
    return ValidationError(f"ZIP entry {info.orig_filename!r} cannot be extracted ({type(exc).__name__}: {exc})", field="file")
