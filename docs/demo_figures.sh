#!/usr/bin/env bash
# The README's demo figures (the five-model table, tuning, the ensemble's hours and its shadow
# record): a full build with the clock frozen at 12:00:30 UTC on 2026-11-20, then six hourly
# runs at 13:00:30 ... 18:00:30, from scratch in a temp folder (or the folder given). The
# figures are then in its blofin.duckdb: ml_model_results, tuning_trials, model_params,
# forward_performance.   Usage: bash docs/demo_figures.sh [folder]
set -euo pipefail
root=${1:-$(mktemp -d)}
repo=$(cd "$(dirname "$0")/.." && pwd)
rm -rf "$root" && mkdir -p "$root/home"
cp "$repo/dagster_home/dagster.yaml" "$root/home/"
cd "$repo"
export DAGSTER_HOME=$root/home BLOFIN_DUCKDB_PATH=$root/blofin.duckdb BLOFIN_MODELS_DIR=$root/models
started=$(date +%s)
BLOFIN_AS_OF=2026-11-20T12:00:30Z .venv/bin/dg launch --assets '*' >"$root/all.log" 2>&1
echo "full build (tuning included): $(($(date +%s) - started)) s"
for hour in 13 14 15 16 17 18; do
    BLOFIN_AS_OF=2026-11-20T$hour:00:30Z .venv/bin/dg launch --job hourly_training \
        >"$root/hourly_$hour.log" 2>&1
done
echo "warehouse: $root/blofin.duckdb"
