"""The DuckDB warehouse, one module per table family: connection and locking, candles and their
fingerprints, derived tables, the training read, results, predictions. Imports no Dagster."""
