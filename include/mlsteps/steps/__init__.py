"""One module per step: parse options, read, call the logic, write, report."""
