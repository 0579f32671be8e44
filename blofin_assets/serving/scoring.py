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
    """One row per (instrument, model): what each served model says about the latest bar,
    with the predicted class named for classifiers."""
    predicted_at = pd.Timestamp.now(tz="UTC")
    rows = []
    for name in model_names:
        model = load_model(name, models_dir)
        scored = model.predict(latest_features)
        labels = model.labels(scored)
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
                    "prediction_label": labels.iloc[position],
                }
            )
    return pd.DataFrame(rows)


def prediction_preview(scored: pd.DataFrame) -> pd.DataFrame:
    """Instruments by models, each cell readable: a classifier's class name and its
    probability ('up (p_up 0.512)', 'neutral (p 0.71)'), a regressor's value to 6 digits."""

    def cell(row: pd.Series) -> str:
        label = row["prediction_label"]
        if isinstance(label, str):
            binary = json.loads(row["class_probabilities"]).keys() == {"0", "1"}  # p is of up
            return f"{label} ({'p_up' if binary else 'p'} {row['probability']:.3f})"
        return f"{row['prediction']:.6g}"

    cells = scored.assign(cell=scored.apply(cell, axis=1))
    return cells.pivot(index="inst_id", columns="model_name", values="cell")
