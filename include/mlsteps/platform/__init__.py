"""Platform I/O: the lake, the model registry, Feast, lineage, training sets, step context."""
