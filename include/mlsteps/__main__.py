"""Entry point for ``python -m mlsteps``.

Guarded: Dask's worker processes are spawned, and a spawned process imports the parent's main module.
"""

from mlsteps.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
