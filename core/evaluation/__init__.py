"""Evaluation jobs: run a trained checkpoint over a dataset subset, keep per-image results and metrics.

``metrics`` computes the aggregate numbers (torchmetrics), ``results`` stores the
per-image table in one compact file, ``index`` serves sorted/filtered pages of
it, ``service`` is what the API calls and ``worker`` is what the job process runs.
"""
