"""The job layer: one way to run background work (training runs, evaluations, exports) for every kind.

- ``folder``: a job's record file under its lock, the claim (exactly one executor), heartbeat;
- ``kinds``: what differs between kinds (record name, folder layout, worker function, liveness);
- ``queue``: the server's one queue with device reservation, supervision, stop and kill;
- ``spawn``: cold and warm worker processes; ``worker``: their entry point
  (``python -m modelyard.core.jobs.worker``);
- ``foreground``: the CLI's side: run a job in this process, or submit it to the
  server that serves the workspace and follow it.

See DESIGN.md section 11 and docs/internals/run-protocol.md.
"""
