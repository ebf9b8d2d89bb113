"""modelyard's performance harness (``make bench`` / ``python -m benchmarks``)."""
