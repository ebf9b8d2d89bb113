"""``dataset.json`` rewritten by streaming: a split's create or delete without the document as Python objects.

A file laid out as our writer lays it out (``atomic_write_json``: msgspec,
indent 2, ``images`` the last key) is copied batch by batch into a temp file
(``jsonio.atomic_writer``: fsync, rename, fsync of the folder), with two
changes: the header (every key before ``images``) is re-encoded from its
parsed, updated value, and each image's ``split`` list is replaced by its new
text. Everything else of an image is its bytes as they were, so for a file our
writer wrote the result is byte for byte what ``atomic_write_json`` writes for
the same document.

Each image's list is found by its key: ``\\n      "split": `` at the images'
key depth (indent 6; a newline never occurs inside a JSON string, so that
text is structure). The old text of every list is known from the index
(``split_mat``: the file's lists in file order), the text after each key must
start with it, and there must be one key per indexed image, or the rewrite is
abandoned (``NotStreamable``: the temp is removed, the file untouched) and the
caller takes the whole-document path. So does any other layout. Segments are
written with gathered writes (``os.writev``), never joined into one copy, by a
writer thread while the next segment is cut.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from operator import getitem, itemgetter
from pathlib import Path
from typing import IO, Any, BinaryIO

import numpy as np

from ..jsonio import encode_pretty
from .layout import ARRAY_END, NotStreamable, image_pieces, read_header, replaced

#: small enough that a segment's pieces (and their copies) stay a few tens of MB
_CHUNK = 4 * 1024 * 1024
_SPLIT_KEY = b'\n      "split": '
_IOV_MAX = 1024
#: segments cut ahead of the writer thread
_QUEUED = 4
#: header keys the whole-document path adds when missing (``store.load``'s defaults, ``image_stats``): then it must run
HEADER_KEYS = ("split_names", "classes", "image_stats")


def split_list_text(values: list[str]) -> bytes:
    """The bytes of an image's ``split`` key and list as ``atomic_write_json`` writes them (after the image's previous key)."""
    return _SPLIT_KEY + encode_pretty(values).replace(b"\n", b"\n      ")


def list_texts(matrix: np.ndarray, table: list[str]) -> tuple[np.ndarray, list[bytes]]:
    """Each row's key into the distinct texts, and those texts: rows of ``matrix`` are codes into ``table``, ``-1`` past the end."""
    rows, width = matrix.shape
    if width == 0:
        return np.zeros(rows, dtype=np.int64), [split_list_text([])]
    # a row's key built column by column: (key so far, code) packed into one int64 and renumbered densely
    if rows == 0:
        return np.zeros(0, dtype=np.int64), []
    keys = np.zeros(rows, dtype=np.int64)
    for column in range(width):
        keys = _dense(keys * (len(table) + 1) + matrix[:, column].astype(np.int64) + 1)
    first = np.zeros(int(keys.max()) + 1, dtype=np.int64)
    first[keys[::-1]] = np.arange(rows - 1, -1, -1)  # the first row of each key (later writes win: reversed)
    distinct = matrix[first].tolist()
    texts = [split_list_text([table[code] for code in row if code >= 0]) for row in distinct]
    return keys, texts


def _dense(values: np.ndarray) -> np.ndarray:
    """``values`` renumbered 0, 1, ... in increasing order (a lookup table when they are small, else a sort)."""
    top = int(values.max())
    if top < 16 * len(values) + 1024:
        present = np.zeros(top + 1, dtype=bool)
        present[values] = True
        return (np.cumsum(present) - 1)[values]
    return np.unique(values, return_inverse=True)[1].reshape(-1).astype(np.int64)


def appended(matrix: np.ndarray, lengths: np.ndarray, splits: int, values: np.ndarray, none_code: int) -> np.ndarray:
    """The split lists after a split is added: each list padded with none to ``splits`` (a short list repaired), then ``values``."""
    rows, width = matrix.shape
    grown = np.full((rows, max(width, splits) + 1), -1, dtype=np.int16)
    grown[:, :width] = matrix
    columns = np.arange(grown.shape[1])
    grown[(columns >= lengths[:, None]) & (columns < splits)] = none_code
    grown[np.arange(rows), np.maximum(lengths, splits)] = values
    return grown


def removed(matrix: np.ndarray, split_index: int) -> np.ndarray:
    """The split lists after split ``split_index`` is deleted (a list too short to have it is unchanged)."""
    if split_index >= matrix.shape[1]:
        return matrix
    return np.delete(matrix, split_index, axis=1)


def rewrite_split_lists(path: Path, update_header: Callable[[dict[str, Any]], None],
                        old: tuple[np.ndarray, list[bytes]], new: tuple[np.ndarray, list[bytes]]) -> None:
    """Replace ``path`` by itself with the header updated in place and every image's split list replaced.

    ``old``/``new``: per image (file order) a key into texts (``list_texts``);
    the file's lists must be the old texts, or ``NotStreamable`` is raised and ``path`` is left as it was.
    """
    old_keys, old_texts = old
    new_keys, new_texts = new
    old_lists = [text[len(_SPLIT_KEY):] for text in old_texts]
    cut_after = [slice(len(text), None) for text in old_lists]
    with replaced(path) as (source, out):
        _rewrite(source, out, update_header, old_keys, old_lists, cut_after, new_keys, new_texts)


def _rewrite(source: IO[bytes], out: BinaryIO, update_header: Callable[[dict[str, Any]], None], old_keys: np.ndarray,
             old_lists: list[bytes], cut_after: list[slice], new_keys: np.ndarray, new_texts: list[bytes]) -> None:
    header, rest = read_header(source, _CHUNK, HEADER_KEYS)
    update_header(header)
    head = encode_pretty(header)
    if rest is None:  # no images
        if len(old_keys):
            raise NotStreamable("the file has no images, the index has some")
        out.write(head[:-2] + b',\n  "images": []\n}\n')
        return
    out.write(head[:-2] + b",\n  \"images\": [")
    out.flush()
    done = 0
    with _Writer(out.fileno()) as writer:
        for segment in image_pieces(rest, source, _CHUNK):
            # the text after each image's split key starts with its list (a newline is never inside a string)
            pieces = segment.split(_SPLIT_KEY)
            found = len(pieces) - 1
            if done + found > len(old_keys):
                raise NotStreamable("more split lists than images")
            keys = old_keys[done : done + found].tolist()
            after = pieces[1:]
            if not all(map(bytes.startswith, after, _pick(old_lists, keys))):
                raise NotStreamable("a split list differs from the index's")
            parts: list[bytes] = [b""] * (2 * found + 1)
            parts[0] = b"," + pieces[0] if done else pieces[0]  # the comma between two pieces belongs to neither
            parts[1::2] = _pick(new_texts, new_keys[done : done + found].tolist())
            parts[2::2] = map(getitem, after, _pick(cut_after, keys))
            writer.write(parts)
            done += found
    if done != len(old_keys):
        raise NotStreamable(f"the file has {done} split lists, the index {len(old_keys)} images")
    out.write(ARRAY_END + b"\n")


def _pick(values: list[Any], keys: list[int]) -> list[Any]:
    if len(keys) == 1:
        return [values[keys[0]]]
    return list(itemgetter(*keys)(values)) if keys else []


class _Writer:
    """Writes segments on a thread while the next one is cut (the write releases the GIL: both cores work).

    At most ``_QUEUED`` segments wait (a few tens of MB). Leaving the ``with``
    block waits for every queued write; an error of the writer is raised there,
    one of the block stops the writer first (the temp file is then removed).
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.queue: queue.Queue[list[bytes] | None] = queue.Queue(maxsize=_QUEUED)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="dataset-json-writer", daemon=True)

    def __enter__(self) -> _Writer:
        self.thread.start()
        return self

    def write(self, parts: list[bytes]) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(parts)

    def _run(self) -> None:
        while (parts := self.queue.get()) is not None:
            if self.error is None:  # after a failed write the rest is only drained
                try:
                    _write_all(self.fd, parts)
                except BaseException as exc:  # noqa: BLE001 - handed to the producer, which raises it
                    self.error = exc

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        if value is not None:
            self.error = self.error or RuntimeError("stopped")  # drop what is queued
        self.queue.put(None)
        self.thread.join()
        if value is None and self.error is not None:
            raise self.error


def _write_all(fd: int, parts: list[bytes]) -> None:
    """Write ``parts`` in order with gathered writes (no joined copy of a segment)."""
    for start in range(0, len(parts), _IOV_MAX):
        batch = parts[start : start + _IOV_MAX]
        written = os.writev(fd, batch)
        expected = sum(map(len, batch))
        if written != expected:  # short write (a signal, a full disk): the rest, plainly
            rest = b"".join(batch)[written:]
            while rest:
                rest = rest[os.write(fd, rest):]
