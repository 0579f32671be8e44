"""blofin_assets: BloFin candles to five trained models, as Dagster software-defined assets."""
