"""Training, split by who runs it.

The server side (this package): ``experiments`` (experiment records and their
configs), ``run_service`` (start, read, stop, resume, delete runs),
``run_folder`` (creating a run folder and reading and writing ``run.json``,
the only channel between server and worker), ``checkpoints`` (names, safe
writing and reading, the resume point, the trained model back), ``config``
and ``augmentations`` (the experiment schema, shared with the worker).

The worker side (``worker/``): what runs in a job's worker process:
``engine`` (the Lightning run), ``module`` (the LightningModule), ``data``
(the DataModule and decoding), ``callbacks`` (run files, heartbeat, stop
requests), ``sampling`` and ``rng_state`` (exact resume), ``threads``, and
``job`` (training as a job kind). The run queue is the job layer's
(``core/jobs/queue.py``).
"""
