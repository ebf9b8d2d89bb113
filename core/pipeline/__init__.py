"""Reproducible pipelines: one YAML file runs project, dataset, split, training, evaluation and exports.

``schema`` reads and validates the file, ``source`` tells whether its data is
already imported, ``foreground`` runs jobs in this process (the CLI's way),
and ``runner`` strings the steps together through the core services.
"""

from .runner import RESULT_FILE, PipelineOutcome, Reporter, run_pipeline
from .schema import Pipeline, load_pipeline, parse_pipeline

__all__ = ["RESULT_FILE", "Pipeline", "PipelineOutcome", "Reporter", "load_pipeline", "parse_pipeline", "run_pipeline"]
