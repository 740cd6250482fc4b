"""Command-line entry points: ``python -m experiments.run`` (one run)."""
