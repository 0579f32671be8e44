"""Load a served model from another program, safely.

    from blofin_assets.serving import load_model
    model = load_model("direction_predictor")            # BLOFIN_MODELS_DIR or ./models
    predictions = model.predict(features_frame)           # rows of the `features` table

pickle runs code when it loads, so nothing is unpickled before its sha256 matches the one
recorded in metadata.json, and the version directory is resolved once, so a promotion that
happens while loading cannot mix two versions.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd

from blofin_assets.ml.store import ModelStore, hash_problems

DEFAULT_MODELS_DIR = "models"


class ModelIntegrityError(RuntimeError):
    """A served file is missing, truncated or not the one that was trained."""


@dataclass(frozen=True)
class ServedModel:
    name: str
    version: str
    estimator: Any
    scaler: Any
    config: dict[str, Any]
    metadata: dict[str, Any]

    @property
    def features(self) -> list[str]:
        return list(self.config["features"])

    def predict(self, features: pd.DataFrame) -> pd.DataFrame:
        """Score rows of the features table: one output row per input row, index kept.

        Columns: ``prediction`` (in target units: probability of up for direction, class for
        momentum, 0-100 for risk, realised volatility, price for price), and class
        probabilities ``p_<class>`` for classifiers.
        """
        missing = [column for column in self.features if column not in features.columns]
        if missing:
            raise ValueError(f"{self.name}: input lacks feature columns {missing}")
        values = features[self.features].to_numpy(dtype="float64")
        if not np.isfinite(values).all():
            bad = int((~np.isfinite(values)).any(axis=1).sum())
            raise ValueError(f"{self.name}: {bad} input rows hold NaN/inf features")
        x = self.scaler.transform(values)
        out = pd.DataFrame(index=features.index)
        if self.config["task"] == "classification":
            probabilities = self.estimator.predict_proba(x)
            for label, column in zip(self.estimator.classes_, probabilities.T, strict=True):
                out[f"p_{int(label)}"] = column
            if list(self.estimator.classes_) == [0, 1]:
                out["prediction"] = probabilities[:, 1]  # probability that the price rises
            else:
                out["prediction"] = self.estimator.classes_[probabilities.argmax(axis=1)]
        else:
            raw = self.estimator.predict(x)
            if self.config.get("target_transform") == "log_return":
                if "close" not in features.columns:
                    raise ValueError(f"{self.name}: needs the `close` column to return prices")
                raw = features["close"].to_numpy(dtype="float64") * np.exp(raw)
            elif self.config.get("target") == "target_risk":
                raw = np.clip(raw, 0.0, 100.0)
            out["prediction"] = raw
        return out


def load_model(name: str, models_dir: str | Path | None = None) -> ServedModel:
    """The served version of ``name``, verified before anything is unpickled."""
    store = ModelStore(models_dir or os.environ.get("BLOFIN_MODELS_DIR", DEFAULT_MODELS_DIR))
    directory = store.served_dir(name)
    if directory is None or not directory.is_dir():
        raise ModelIntegrityError(
            f"no served version of {name!r} under {store.model_dir(name)}: materialize it first"
        )
    try:
        metadata = json.loads((directory / "metadata.json").read_text())
        config = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError) as error:
        raise ModelIntegrityError(f"{directory}: unreadable config/metadata ({error})") from error
    problems = hash_problems(directory, metadata)
    if problems:
        raise ModelIntegrityError(
            "refusing to unpickle files that are not the ones trained: " + "; ".join(problems)
        )
    estimator = joblib.load(directory / "model.pkl")
    scaler = joblib.load(directory / "scaler.pkl")
    expected_inputs = getattr(scaler, "n_features_in_", None)
    if expected_inputs is not None and expected_inputs != len(config["features"]):
        raise ModelIntegrityError(
            f"{directory}: scaler expects {expected_inputs} inputs, config lists "
            f"{len(config['features'])} features"
        )
    return ServedModel(
        name=name,
        version=metadata["version"],
        estimator=estimator,
        scaler=scaler,
        config=config,
        metadata=metadata,
    )
