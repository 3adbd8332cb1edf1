"""Operator scripts run from the repository's root as modules (``python -m scripts.soak``), so
that they import ``service`` and ``tests`` without touching ``sys.path``."""
