"""Process-wide settings that only an entry point may choose: the code location's load
(``blofin_assets.definitions``) and the benchmark call these; importing the library never does.

Plain and import-free, so an entry point can call them before scikit-learn or XGBoost load.
"""

from __future__ import annotations

import gc
import os


def prefer_passive_openmp() -> None:
    """Sleeping, not spinning, OpenMP threads while they wait for work.

    XGBoost and HistGradientBoosting use OpenMP, whose threads spin by default. When anything
    else holds a core (a second run, the webserver, a notebook) spinning threads starve each
    other on a small machine. libgomp reads the policy once, when it loads, so this must run
    before the first import of scikit-learn or XGBoost; an OMP_WAIT_POLICY already in the
    environment wins.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def freeze_loaded_heap() -> None:
    """Exempt everything loaded so far from full garbage collections.

    A long-lived process keeps its imports (Dagster, pandas, scikit-learn, the definitions)
    for its whole life, yet every full collection walks them again, and the pause lands in
    whichever step happens to allocate then. Collect first so no import-time garbage is frozen.
    """
    gc.collect()
    gc.freeze()
