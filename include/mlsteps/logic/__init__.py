"""Pure functions over frames and arrays: no I/O, no plots."""
