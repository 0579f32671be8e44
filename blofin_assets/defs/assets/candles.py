"""candles: OHLCV per instrument and bar, ingested incrementally from the configured source."""

from dagster import AssetExecutionContext, DataVersion, MaterializeResult, MetadataValue, asset

from blofin_assets.defs.assets.metadata import OWNERS, provenance
from blofin_assets.defs.resources import BlofinSettings, DuckDBWarehouse
from blofin_assets.market.ingest import ingest_candles


@asset(
    group_name="market_data",
    description="OHLCV candles per (inst_id, ts) in DuckDB table main.candles. Source chosen by "
    "BLOFIN_SOURCE: demo (synthetic, labelled as such), blofin (REST API) or file. Incremental: "
    "only new closed bars are added; a failing source fails the run, never falls back. A file "
    "holds one bar size and one market (demo or real); a re-fetched bar that differs from the "
    "stored one fails the run (or is quarantined), never dropped silently.",
    kinds={"duckdb", "python"},
    owners=OWNERS,
    code_version="candles-1",
    pool="duckdb_writer",
)
def candles(
    context: AssetExecutionContext, settings: BlofinSettings, warehouse: DuckDBWarehouse
) -> MaterializeResult:
    report = ingest_candles(settings.market(), warehouse.file())
    fingerprint = report.fingerprint
    if report.synthetic:
        context.log.warning("SYNTHETIC DATA: candles come from the seeded demo market")
    return MaterializeResult(
        metadata={
            "source": report.source,
            **provenance(report.stored_sources),
            "new_rows": MetadataValue.int(report.new_rows),
            "unchanged_rows": MetadataValue.int(report.unchanged_rows),
            "conflicting_rows": MetadataValue.int(report.conflicting_rows),
            "fetched_rows": MetadataValue.int(report.fetched_rows),
            "rejected_rows": MetadataValue.int(report.rejected_rows),
            "requests": MetadataValue.int(report.requests),
            "dagster/row_count": MetadataValue.int(fingerprint["rows"]),
            "dagster/table_name": "main.candles",
            "bar": settings.bar,
            "instruments": MetadataValue.int(fingerprint["instruments"]),
            "first_ts": str(fingerprint["first_ts"]),
            "last_ts": str(fingerprint["last_ts"]),
            "validation": MetadataValue.json(report.validation),
            "candle_fingerprints": fingerprint["source"],
            "duckdb_path": MetadataValue.path(warehouse.path),
        },
        # Content-derived: identical re-ingestion keeps every downstream asset in sync.
        data_version=DataVersion(
            f"{fingerprint['rows']}:{fingerprint['last_ts']}:{fingerprint['content_hash']}"
        ),
    )
