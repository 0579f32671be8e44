"""The market floor: the candle contract (columns, bar sizes, instruments, the clock), the
sources that produce candles (demo, BloFin REST, files) and the validation every batch passes.
Imports no Dagster."""
