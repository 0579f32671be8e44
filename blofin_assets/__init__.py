"""blofin_assets: BloFin candles to five trained models, as Dagster software-defined assets.

Two floors: ``defs/`` holds the Dagster definitions; ``market``, ``storage``, ``ml``,
``quality`` and ``serving`` are plain packages that import no Dagster (see ARCHITECTURE.md).
Importing any of them changes nothing in the importer's process.
"""
