"""``python -m modelyard`` runs the same CLI as the ``modelyard`` command."""

from modelyard.cli import main

if __name__ == "__main__":
    main()
