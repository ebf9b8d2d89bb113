"""Flat, unique, safe file names for ``dataset/images/``.

``cat/0001.jpg`` becomes ``cat_0001.jpg`` (and ``cat/cat_0001.jpg`` too: a folder
name the file name already starts with is not repeated). Names are built from letters,
digits, ``_``, ``-`` and ``.`` only, never start with a dot, stay well under
the file-system limit, and are unique ignoring case (so a dataset copied to a
case-insensitive disk keeps every file). The original path is kept in
``source_path``; the name itself is only a key.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import PurePosixPath
from typing import Protocol

from .validate import EXTENSIONS

MAX_STEM_BYTES = 100
MAX_NAME_CHARS = 160
_UNSAFE = re.compile(r"[^\w.\-]+")
_SAFE_NAME = re.compile(r"[\w\-][\w.\-]{0,%d}" % (MAX_NAME_CHARS - 1))
_SAFE_LINES = re.compile(r"(?:[\w\-][\w.\-]{0,%d}\n)*" % (MAX_NAME_CHARS - 1))


def flat_name(source_path: str, fmt: str) -> str:
    """A safe flat name for ``source_path`` with an extension that matches the real format ``fmt``."""
    path = PurePosixPath(unicodedata.normalize("NFC", source_path.replace("\\", "/")))
    parts = [part for part in path.parts if part not in ("", ".", "..", "/")]
    suffix = PurePosixPath(parts[-1]).suffix.lower() if parts else ""
    if parts:
        parts[-1] = PurePosixPath(parts[-1]).stem
    stem = _UNSAFE.sub("_", "_".join(_without_repeats(parts))).lstrip("._-")
    while len(stem.encode("utf-8")) > MAX_STEM_BYTES:
        stem = stem[:-1]
    extension = suffix if suffix in EXTENSIONS[fmt] else EXTENSIONS[fmt][0]
    return (stem or "image") + extension


def _without_repeats(parts: list[str]) -> list[str]:
    """Drop a folder whose name the next part already starts with: ``circle/circle_0000`` -> ``circle_0000``."""
    kept = []
    for folder, following in zip(parts, parts[1:], strict=False):
        if following.casefold() != folder.casefold() and not following.casefold().startswith(
                tuple(folder.casefold() + sep for sep in "_-. ")):
            kept.append(folder)
    return [*kept, *parts[-1:]]


class Taken(Protocol):
    """The casefolded names in use: a ``set[str]``, or anything that answers ``in`` and ``add`` as one does."""

    def __contains__(self, name: object, /) -> bool: ...

    def add(self, name: str, /) -> None: ...


def unique_name(candidate: str, taken: Taken) -> str:
    """``candidate``, or ``stem_2.ext``, ``stem_3.ext``... whichever is free; records it in ``taken`` (casefolded)."""
    path = PurePosixPath(candidate)
    name, number = candidate, 1
    while name.casefold() in taken:
        number += 1
        name = f"{path.stem}_{number}{path.suffix}"
    taken.add(name.casefold())
    return name


def is_safe_name(name: str) -> bool:
    """True for a name this module could have produced (the gate before a name touches a path)."""
    return bool(_SAFE_NAME.fullmatch(name))


def all_safe_names(names: list[str]) -> bool:
    """``all(map(is_safe_name, names))`` in one regex pass (an index checks 100,000 names at a time)."""
    text = "".join(name + "\n" for name in names)
    return text.count("\n") == len(names) and bool(_SAFE_LINES.fullmatch(text))  # a name holding "\n" is unsafe
