"""Entry point for ``python -m mlsteps``."""

from mlsteps.cli import main

raise SystemExit(main())
