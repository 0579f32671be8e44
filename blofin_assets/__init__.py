"""blofin_assets: BloFin candles to five trained models, as Dagster software-defined assets."""

import os

# XGBoost and HistGradientBoosting use OpenMP, whose threads spin while they wait. When anything
# else holds a core (a second run, the webserver, a notebook) spinning threads starve each
# other: measured here, a 7,000-row XGBoost fit took 4.3 s with the default policy and 0.19 s
# with PASSIVE on a 2-core machine with one busy core. Must be set before libgomp loads;
# an explicit OMP_WAIT_POLICY in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
