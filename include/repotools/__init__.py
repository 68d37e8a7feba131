"""Repository tools (the demo, a local Airflow, a demo webhook); not part of the step image."""
