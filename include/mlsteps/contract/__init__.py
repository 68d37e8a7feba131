"""The light contract layer: config, lake layout, step results. No ML libraries."""
