"""Pretrained weights from the torch hub cache: found, fetched once, and loaded without running code.

Architecture plugins that offer ``pretrained=True`` through torchvision (or
any weights object with a ``url``) share these three steps, so every one of
them fails the same way and loads the same way:

- ``weights_cache_file(weights)``: where torch hub keeps the file
  (``$TORCH_HOME/hub/checkpoints/<file name of the URL>``);
- ``ensure_weights_cached(name, weights)``: that file, downloaded if it is
  missing; a ``ValidationError`` (``model.pretrained``) naming the file and
  the folder to copy it into when it cannot be fetched (no internet);
- ``loading_cached_weights(name, cache_file)``: a block in which every
  ``torch.load`` uses ``weights_only=True`` (torchvision passes no flag), and
  any failure becomes a ``ValidationError`` saying the file cannot be loaded
  safely, so a tampered cache file can neither run code nor crash a job.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from .errors import ValidationError

_FORCE_WEIGHTS_ONLY_ENV = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
_force_lock = threading.Lock()


def weights_cache_file(weights: Any) -> Path:
    """Where torch hub keeps ``weights``' file: ``<torch.hub.get_dir()>/checkpoints/<file name from the URL>``."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


def ensure_weights_cached(name: str, weights: Any) -> Path:
    """Return the cached weights file of ``name``, downloading it if needed.

    Raises ``ValidationError`` naming the file and the cache folder when it is
    not cached and cannot be downloaded (e.g. no internet).
    """
    import torch.hub

    target = weights_cache_file(weights)
    if target.is_file():
        return target
    match = torch.hub.HASH_REGEX.search(target.name)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(weights.url, str(target), match.group(1) if match else None, progress=False)
    except Exception as exc:  # URLError, HTTPError, timeouts, hash mismatch, read-only cache ...
        raise ValidationError(
            f"Pretrained weights for {name} are not available: {target.name} is not in the torch hub cache "
            f"({target.parent}) and downloading {weights.url} failed ({type(exc).__name__}: {exc}). "
            f"Copy {target.name} into {target.parent} (or set TORCH_HOME), or set model.pretrained to false.",
            field="model.pretrained",
            details={"file": target.name, "cache_dir": str(target.parent), "url": weights.url},
        ) from exc
    return target


@contextlib.contextmanager
def weights_only_loads() -> Iterator[None]:
    """Make every ``torch.load`` in this block use ``weights_only=True`` (torchvision passes no flag)."""
    with _force_lock:
        previous = os.environ.get(_FORCE_WEIGHTS_ONLY_ENV)
        os.environ[_FORCE_WEIGHTS_ONLY_ENV] = "1"
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop(_FORCE_WEIGHTS_ONLY_ENV, None)
            else:
                os.environ[_FORCE_WEIGHTS_ONLY_ENV] = previous


@contextlib.contextmanager
def loading_cached_weights(name: str, cache_file: Path) -> Iterator[None]:
    """Load ``cache_file`` (and any other hub file) in this block with ``weights_only=True``.

    Whatever fails inside (a pickle that needs code, a truncated file, a state
    dict of other shapes) is raised as a ``ValidationError`` on
    ``model.pretrained`` that names the file and says to delete it.
    """
    try:
        with weights_only_loads():
            yield
    except ValidationError:
        raise
    except Exception as exc:
        text = str(exc).strip()
        raise ValidationError(
            f"Pretrained weights file {cache_file.name} for {name} cannot be loaded safely "
            f"({type(exc).__name__}: {text.splitlines()[0] if text else ''}); "
            f"delete it from {cache_file.parent} to download it again",
            field="model.pretrained",
            details={"file": cache_file.name, "cache_dir": str(cache_file.parent)},
        ) from exc
