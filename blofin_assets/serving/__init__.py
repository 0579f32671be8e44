"""Serving: load a served model, verified, from any program, and score rows with it.

    from blofin_assets.serving import load_model
    model = load_model("direction_predictor")             # BLOFIN_MODELS_DIR or ./models

Importing this package changes nothing in the importer's process (no thread policy, no heap
freeze): those belong to the code location's entry point. Imports no Dagster.
"""

from blofin_assets.serving.loading import (
    ModelExpiredError,
    ModelExpiredWarning,
    ModelIntegrityError,
    load_model,
    load_version,
)
from blofin_assets.serving.model import ServedModel

__all__ = [
    "ModelExpiredError",
    "ModelExpiredWarning",
    "ModelIntegrityError",
    "ServedModel",
    "load_model",
    "load_version",
]
