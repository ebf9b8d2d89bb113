"""Export jobs: turn a run's checkpoint into a deployable file, verified against PyTorch.

``service`` validates and queues (format and options from the exporter
registry, and the base format of one built on another), ``worker`` runs the
exporter plugin and the verification, ``produce`` runs an exporter after its
base format's (shared with ``modelyard.testing.check_exporter``), ``verify``
compares exported and PyTorch outputs under the exporter's
``VerificationPolicy``, ``bundle`` builds the download with labels,
preprocessing and a usage note (the exporter's own snippet when it has one).
"""
