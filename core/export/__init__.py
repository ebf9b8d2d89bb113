"""Export jobs: turn a run's checkpoint into a deployable file, verified against PyTorch.

``service`` validates and queues (format and options from the exporter
registry), ``worker`` runs the exporter plugin and the verification,
``verify`` compares exported and PyTorch outputs, ``bundle`` builds the
download with labels, preprocessing and a usage note.
"""
