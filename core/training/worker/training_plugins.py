"""What a fit builds from the config's plugin choices: callbacks, experiment loggers, the loss and extra metrics.

Names are looked up in the registries (``register_callbacks``,
``register_losses``, ``register_metrics``) and options resolved again against
each entry's schema (they were checked when the experiment was saved).

Experiment loggers are built in the process that owns the run files only
(rank 0), and driven by ``ExperimentLoggers`` from the run's own records,
never by Lightning's per-step logging: ``log_hyperparams`` with the
flattened config when the fit starts, ``log_metrics`` with each epoch's
``metrics.json`` record at step = epoch, ``save`` and ``finalize(status)``
when the run ends. A logger that raises is reported once as a warning event
and the run goes on: an unreachable tracking server never costs the training.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from ...errors import ValidationError
from ...plugin_types import TrainingContext
from ..config import ExperimentConfig, config_to_dict
from ..plugin_choices import flatten_config, resolve_plugin_options
from ..run_folder import EventLog

log = logging.getLogger(__name__)

#: ``Logger.finalize`` status for a run's final status
FINAL_STATUS = {"completed": "success", "failed": "failed", "stopped": "killed"}


@dataclass
class TrainingPlugins:
    """The objects a fit uses: Lightning callbacks, loggers by name, the loss (``None``: none) and metrics by name."""

    callbacks: list[Any] = field(default_factory=list)
    loggers: dict[str, Any] = field(default_factory=dict)
    loss: Any = None
    metrics: dict[str, Any] = field(default_factory=dict)


def build_training_plugins(host: Any, config: ExperimentConfig, context: TrainingContext,
                           with_loggers: bool) -> TrainingPlugins:
    """Build what ``config`` chooses; loggers only ``with_loggers`` (the process that owns the run files)."""
    built = TrainingPlugins()
    for index, choice in enumerate(config.callbacks):
        entry = host.callbacks.callback(choice.name, field=f"config.callbacks[{index}].name")
        options = resolve_plugin_options(entry, choice.options, f"config.callbacks[{index}].options", task=context.task)
        built.callbacks.append(entry.build(options, context))
    if with_loggers:
        for name, raw in config.logging.items():
            entry = host.callbacks.logger(name, field=f"config.logging.{name}")
            built.loggers[name] = entry.build(resolve_plugin_options(entry, raw, f"config.logging.{name}",
                                                                     task=context.task), context)
    if host.losses.for_task(context.task):  # the task takes registered losses
        choice = config.training.loss
        loss = host.losses.get(choice.name, field="config.training.loss.name")
        options = resolve_plugin_options(loss, choice.options, "config.training.loss.options", task=context.task)
        built.loss = loss.build(options, context)
    for index, choice in enumerate(config.training.metrics):
        metric = host.metrics.get(choice.name, field=f"config.training.metrics[{index}].name")
        options = resolve_plugin_options(metric, choice.options, f"config.training.metrics[{index}].options",
                                         task=context.task)
        built.metrics[metric.name] = metric.build(options, context)
    return built


def hand_to_module(module: Any, built: TrainingPlugins, task: str) -> None:
    """Give the task module the registered loss and metrics (``use_loss``, ``use_metrics``)."""
    if built.loss is not None:
        if not hasattr(module, "use_loss"):
            raise ValidationError(f"task '{task}' takes no registered loss (its module has no use_loss)",
                                  field="config.training.loss.name")
        module.use_loss(built.loss)
    if built.metrics:
        if not hasattr(module, "use_metrics"):
            raise ValidationError(f"task '{task}' takes no registered metrics (its module has no use_metrics)",
                                  field="config.training.metrics")
        module.use_metrics(built.metrics)


class ExperimentLoggers:
    """Drives the experiment loggers of one fit from the run's records (rank 0 only)."""

    def __init__(self, loggers: dict[str, Any], events: EventLog | None = None) -> None:
        self.loggers = dict(loggers)
        self.events = events
        self._broken: set[str] = set()
        self._finished = False

    def _call(self, name: str, what: str, call: Any) -> None:
        if name in self._broken:
            return
        try:
            call()
        except Exception as exc:  # the run goes on without this logger
            self._broken.add(name)
            message = f"experiment logger {name} failed ({what}) and is off for this run: {type(exc).__name__}: {exc}"
            log.warning("%s", message, exc_info=True)
            if self.events is not None:
                try:
                    self.events.append("log", {"level": "warning", "message": message})
                except Exception:  # a full disk: the log line above is all we can do
                    pass

    def start(self, config: ExperimentConfig) -> None:
        """The flattened experiment config as every logger's hyperparameters."""
        params = flatten_config(config_to_dict(config))
        for name, logger in self.loggers.items():
            self._call(name, "log_hyperparams", lambda logger=logger: logger.log_hyperparams(params))

    def log_epoch(self, record: dict[str, Any]) -> None:
        """One ``metrics.json`` record: every number in it but ``epoch``, at step = epoch."""
        step = int(record["epoch"])
        metrics = {key: float(value) for key, value in record.items()
                   if key != "epoch" and isinstance(value, int | float) and not isinstance(value, bool)}
        for name, logger in self.loggers.items():
            self._call(name, "log_metrics", lambda logger=logger: logger.log_metrics(metrics, step=step))

    def finish(self, status: str) -> None:
        """``save()`` and ``finalize`` with the run's final status (``completed``, ``failed``, ``stopped``); once."""
        if self._finished:
            return
        self._finished = True
        final = FINAL_STATUS.get(status, status)
        for name, logger in self.loggers.items():
            self._call(name, "save", logger.save)
            self._call(name, "finalize", lambda logger=logger: logger.finalize(final))
