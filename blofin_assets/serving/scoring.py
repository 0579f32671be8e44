"""Score the newest bar of every instrument with every served model."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from blofin_assets.serving.loading import expired, load_served, max_age_limit


def score_latest(
    latest_features: pd.DataFrame,
    model_names: Sequence[str],
    models_dir: str | Path,
    *,
    now: pd.Timestamp | None = None,
    max_age_hours: float | None = None,
) -> pd.DataFrame:
    """One row per (instrument, model): what each served model says about the latest bar,
    with the predicted class named for classifiers, whether the row lies outside the
    version's training rows (``outlier``, ``outlier_score``) and whether the version is older
    than ``max_age_hours`` at ``now`` (``expired``: the age a consumer of this row sees)."""
    predicted_at = pd.Timestamp.now(tz="UTC") if now is None else now
    limit = max_age_limit(max_age_hours)
    rows = []
    for name in model_names:
        model = load_served(name, models_dir)
        scored = model.predict(latest_features)
        labels = model.labels(scored)
        age, too_old = model.age_hours(predicted_at), expired(model, predicted_at, limit)
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
                    "outlier": result["outlier"],
                    "outlier_score": float(result["outlier_score"]),
                    "expired": too_old,
                    "model_age_hours": age,
                }
            )
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame = frame.astype({"outlier": "boolean", "expired": "boolean"})
    return frame


def flag_text(row: pd.Series) -> str:
    """What a cell of the preview adds when its row is not an ordinary one."""
    flags = []
    if pd.isna(row["outlier"]):
        flags.append("outlier unknown")
    elif row["outlier"]:
        flags.append(f"OUTLIER {row['outlier_score']:.1f}")
    if not pd.isna(row["expired"]) and row["expired"]:
        flags.append(f"EXPIRED {row['model_age_hours']:.1f} h")
    return f" [{', '.join(flags)}]" if flags else ""


def prediction_preview(scored: pd.DataFrame) -> pd.DataFrame:
    """Instruments by models, each cell readable: a classifier's class name and its
    probability ('up (p_up 0.512)', 'neutral (p 0.71)'), a regressor's value to 6 digits;
    then any flag: '[OUTLIER 5.2]' (its outlier_score), '[outlier unknown]' (a version with
    no reference), '[EXPIRED 4.1 h]' (the version's age)."""

    def cell(row: pd.Series) -> str:
        label = row["prediction_label"]
        if isinstance(label, str):
            binary = json.loads(row["class_probabilities"]).keys() == {"0", "1"}  # p is of up
            text = f"{label} ({'p_up' if binary else 'p'} {row['probability']:.3f})"
        else:
            text = f"{row['prediction']:.6g}"
        return text + flag_text(row)

    cells = scored.assign(cell=scored.apply(cell, axis=1))
    return cells.pivot(index="inst_id", columns="model_name", values="cell")
