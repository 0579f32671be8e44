"""Data-quality verdicts on the stored tables, as plain SQL functions over a DuckDB connection.
The Dagster floor declares them as asset checks (defs/checks.py). Imports no Dagster."""
