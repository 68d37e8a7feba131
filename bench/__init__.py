"""``make bench``: side-by-side measurements of this package against the seed baselines, in one run."""
