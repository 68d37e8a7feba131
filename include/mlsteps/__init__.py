"""Step logic for scheduled ML workflows, run as ``python -m mlsteps <step> ...``."""

__version__ = "0.1.0"
