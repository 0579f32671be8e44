"""Tuning's cost per model and the ensemble's hourly cost, read from a warehouse a run left.

Run the product first (e.g. the README's demo: ``dg launch --assets '*'`` then hourly runs),
then::

    python benchmarks/tuning_cost.py --db data/blofin.duckdb

Prints one JSON line per model (trials, pruned, failed, search seconds, adopted) and one for
direction_ensemble (seconds of each training: member predictions and every stacker fit).
"""

from __future__ import annotations

import argparse
import json

import duckdb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="the DuckDB file a run wrote")
    args = parser.parse_args()
    with duckdb.connect(args.db, read_only=True) as con:
        for name, trials, pruned, failed, seconds in con.execute(
            "SELECT model_name, count(*), count(*) FILTER (WHERE state = 'pruned'), "
            "count(*) FILTER (WHERE state = 'failed'), sum(seconds) FROM tuning_trials "
            "GROUP BY 1 ORDER BY 1"
        ).fetchall():
            adopted = con.execute(
                "SELECT bool_or(adopted) FROM model_params WHERE model_name = ?", [name]
            ).fetchone()[0]
            print(
                json.dumps(
                    {
                        "model": name,
                        "trials": trials,
                        "pruned": pruned,
                        "failed": failed,
                        "search_seconds": round(seconds, 1),
                        "adopted": bool(adopted),
                    }
                )
            )
        ensemble = [
            round(row[0], 2)
            for row in con.execute(
                "SELECT train_seconds FROM ml_model_results "
                "WHERE model_name = 'direction_ensemble' ORDER BY id"
            ).fetchall()
        ]
        print(json.dumps({"model": "direction_ensemble", "train_seconds_per_run": ensemble}))


if __name__ == "__main__":
    main()
