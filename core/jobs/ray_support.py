"""Whether Ray is installed: the ``ray`` executor and ``hardware.executor: ray`` need ``modelyard[ray]``."""

from __future__ import annotations

import importlib.util

from ..errors import ExecutorUnavailableError

INSTALL_HINT = "pip install 'modelyard[ray]'"


def ray_missing() -> str | None:
    """What is missing for the ray executor (``None`` when Ray's job client imports)."""
    try:
        if importlib.util.find_spec("ray") is None:
            return "Ray is not installed"
        import ray.job_submission  # noqa: F401
    except (ImportError, ValueError) as exc:  # a broken or partial install names what it lacks
        return f"Ray cannot be imported ({exc})"
    return None


def require_ray() -> None:
    """``ExecutorUnavailableError`` with the install command when the ray executor cannot work here."""
    missing = ray_missing()
    if missing is not None:
        raise ExecutorUnavailableError(
            f"the ray executor needs Ray: {missing}; install it with `{INSTALL_HINT}` (docs/cluster.md)",
            {"executor": "ray", "install": INSTALL_HINT})
