"""``dataset.json`` as our writer lays it out, read in pieces: the header, then the images array a few MB at a time.

``atomic_write_json`` writes msgspec's indent-2 JSON with ``images`` the last
key, so the file has fixed structure bytes: ``\\n  "images": [`` before the
array, ``\\n    },\\n    {`` between two images (a newline never occurs inside a
JSON string, so that text is structure, not data) and ``\\n  ]\\n}`` after it.
The index build decodes the pieces batch by batch and the streamed rewrite
copies them; both take the whole-document path when ``NotStreamable`` says the
file is laid out some other way.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO

from ..jsonio import atomic_writer

IMAGES_KEY = b'\n  "images": ['
BOUNDARY = b"\n    },\n    {"
ARRAY_END = b"\n  ]\n}"
#: a boundary up to and including the closing brace of the image before it
_CLOSE = len(b"\n    }")


class NotStreamable(Exception):
    """The file is not as the streamed readers expect; nothing was changed (use the whole-document path)."""


def read_head(source: IO[bytes], chunk: int) -> tuple[bytes, bytes | None]:
    """The keys before ``images`` as a JSON object's text, and what follows ``"images": [`` read so far.

    The second is ``None`` for an empty images array (then the file has been read to its end).
    """
    data = source.read(chunk)
    start = data.find(IMAGES_KEY)
    if start < 0:
        raise NotStreamable("images is not laid out as our writer lays it out")
    head = data[:start].rstrip()
    header = (head[:-1] if head.endswith(b",") else head) + b"\n}"
    rest = data[start + len(IMAGES_KEY):]
    if rest.lstrip().startswith(b"]"):
        rest += source.read()
        if rest.strip() != b"]\n}":
            raise NotStreamable("something follows the empty images array")
        return header, None
    return header, rest


def read_header(source: IO[bytes], chunk: int, required: tuple[str, ...]) -> tuple[dict[str, Any], bytes | None]:
    """The keys before ``images`` parsed as ``read_json`` parses them, and what follows ``"images": [`` read so far.

    ``required``: keys the whole-document path would add after ``images`` when missing; one absent is ``NotStreamable``.
    """
    text, rest = read_head(source, chunk)
    try:
        header = json.loads(text)
    except ValueError as exc:
        raise NotStreamable(f"the header does not parse alone ({exc})") from exc
    if not isinstance(header, dict) or "images" in header or any(key not in header for key in required):
        raise NotStreamable(f"the header lacks a key of {', '.join(required)}")
    return header, rest


@contextlib.contextmanager
def replaced(path: Path) -> Iterator[tuple[IO[bytes], BinaryIO]]:
    """``path`` open for reading and the temp file that replaces it when the block ends (``jsonio.atomic_writer``).

    The old file is unlinked by then: its last close frees its page cache (~0.3 s for 455 MB), so it runs on a
    thread, off the request.
    """
    source = open(path, "rb")
    try:
        with atomic_writer(path) as out:
            yield source, out
    finally:
        threading.Thread(target=source.close, name="close-old-dataset-json", daemon=True).start()


def image_pieces(rest: bytes, source: IO[bytes], chunk: int, before: bytes = b"", after: bytes = b"") -> Iterator[bytes]:
    """The images array's text in pieces of whole images, each wrapped in ``before`` and ``after``.

    A piece runs from an image's opening line to an image's closing ``}``; the
    ``,`` between two pieces belongs to neither. The wrapping is part of the one
    copy each piece is (the index build asks for ``[`` and ``]`` to decode it).
    """
    carry = rest
    while True:
        more = source.read(chunk)
        if not more:
            end = carry.rfind(ARRAY_END)
            if end < 0 or carry[end + len(ARRAY_END):] not in (b"\n", b""):
                raise NotStreamable("the file does not end with the images array")
            with memoryview(carry) as view:
                yield b"".join((before, view[:end], after))
            return
        cut = more.rfind(BOUNDARY)
        if cut < 0:  # no image ends in this chunk (or the boundary straddles it): keep reading
            carry += more
            continue
        close = cut + _CLOSE
        with memoryview(more) as view:
            piece = b"".join((before, carry, view[:close], after))
        yield piece
        del piece
        carry = more[close + 1 :]  # after the comma: the next image's opening line
