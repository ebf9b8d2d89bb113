"""The training worker side: everything that runs inside a run's worker process (see ``core/training``)."""
