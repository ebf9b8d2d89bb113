"""Experiment logger ``tensorboard``: the run's epoch metrics as TensorBoard scalars (``pip install 'modelyard[tensorboard]'``).

Selected with ``logging: {tensorboard: {}}``. Event files go to the run
folder's ``tensorboard/`` (a resumed run appends there), one scalar per
``metrics.json`` value at step = epoch; the flattened config is in
``tensorboard/hparams.yaml``. View with ``tensorboard --logdir <workspace>/projects``.
"""

from __future__ import annotations

from typing import Any

from modelyard.core import CallbackRegistry, LoggerPlugin, TrainingContext, hookimpl

#: the run folder's sub-folder holding the event files
LOG_DIR = "tensorboard"
INSTALL_HINT = "pip install 'modelyard[tensorboard]'"


def build_tensorboard_logger(options: dict[str, Any], context: TrainingContext) -> Any:
    from lightning.pytorch.loggers import TensorBoardLogger

    # version "" writes straight into <run>/tensorboard/; no hp_metric placeholder scalar
    return TensorBoardLogger(save_dir=str(context.run_dir), name=LOG_DIR, version="", default_hp_metric=False)


TENSORBOARD = LoggerPlugin(
    name="tensorboard",
    build=build_tensorboard_logger,
    options_schema={"type": "object", "properties": {}},
    description="TensorBoard event files in the run folder's tensorboard/ (scalars per epoch).",
    requires=("tensorboard",),
    install_hint=INSTALL_HINT,
)


@hookimpl
def register_callbacks(registry: CallbackRegistry) -> None:
    registry.add(TENSORBOARD)
