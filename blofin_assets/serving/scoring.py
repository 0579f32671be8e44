"""Score the newest bar of every instrument with every served model."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from blofin_assets.serving.loading import load_model


def score_latest(
    latest_features: pd.DataFrame, model_names: Sequence[str], models_dir: str | Path
) -> pd.DataFrame:
    """One row per (instrument, model): what each served model says about the latest bar."""
    predicted_at = pd.Timestamp.now(tz="UTC")
    rows = []
    for name in model_names:
        model = load_model(name, models_dir)
        scored = model.predict(latest_features)
        probability_columns = [c for c in scored.columns if c.startswith("p_")]
        for position, (_, features_row) in enumerate(latest_features.iterrows()):
            result = scored.iloc[position]
            probabilities = {c[2:]: float(result[c]) for c in probability_columns}
            rows.append(
                {
                    "inst_id": features_row["inst_id"],
                    "ts": features_row["ts"],
                    "model_name": name,
                    "model_version": model.version,
                    "prediction": float(result["prediction"]),
                    # Probability of the predicted class (of "up" for direction).
                    "probability": (
                        float(result["p_1"])
                        if probabilities.keys() == {"0", "1"}
                        else max(probabilities.values())
                    )
                    if probabilities
                    else None,
                    "class_probabilities": json.dumps(probabilities) if probabilities else None,
                    "predicted_at": predicted_at,
                    "horizon": int(model.config["horizon_bars"]),
                }
            )
    return pd.DataFrame(rows)
