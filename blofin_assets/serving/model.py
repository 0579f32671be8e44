"""A served model version as loaded: its estimator, scaler, config, metadata and outlier
reference."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from blofin_assets.market.clock import as_utc
from blofin_assets.ml.reference import OutlierReference
from blofin_assets.ml.specs import SPECS_BY_NAME


@dataclass(frozen=True)
class ServedModel:
    name: str
    version: str
    estimator: Any
    scaler: Any
    config: dict[str, Any]
    metadata: dict[str, Any]
    # None for versions saved before references were (no reference.npz): their rows' outlier
    # flag is unknown (pd.NA), never "not an outlier".
    reference: OutlierReference | None = None

    @property
    def features(self) -> list[str]:
        return list(self.config["features"])

    @property
    def class_names(self) -> tuple[str, ...]:
        """The classes' names, index = class; () for a regressor. From config.json (or
        metadata.json); a version written before they were recorded takes its spec's, whose
        class coding has not changed since the first release."""
        if self.config["task"] != "classification":
            return ()
        for source in (self.config, self.metadata):
            if source.get("class_names"):
                return tuple(source["class_names"])
        spec = SPECS_BY_NAME.get(self.name)
        return spec.class_names if spec is not None else ()

    @property
    def data_until(self) -> pd.Timestamp | None:
        """The newest bar the version could see; older metadata without it: its trained_at."""
        stamp = self.metadata.get("data_until") or self.metadata.get("trained_at")
        return as_utc(stamp) if stamp else None

    def age_hours(self, now: pd.Timestamp) -> float | None:
        """Hours from the newest bar it learnt from to ``now``: what a consumer needs to know
        (how old its knowledge is), and the same under a frozen clock as live; None if the
        metadata records neither data_until nor trained_at."""
        data_until = self.data_until
        if data_until is None:
            return None
        return (as_utc(now, refuse_naive="now") - data_until) / pd.Timedelta(hours=1)

    def outliers(self, scaled: np.ndarray) -> tuple[np.ndarray, pd.arrays.BooleanArray]:
        """(outlier_score, outlier) of rows already through the scaler: NaN and pd.NA
        (unknown) without a reference."""
        if self.reference is None:
            return np.full(len(scaled), np.nan), pd.array([pd.NA] * len(scaled), dtype="boolean")
        scores = self.reference.scores(scaled)
        return scores, pd.array(self.reference.flags(scores), dtype="boolean")

    def labels(self, scored: pd.DataFrame) -> pd.Series:
        """The predicted class's name for each row of ``predict``'s output: the likeliest
        class (for direction, the side of 0.5 its probability of up is on; a tie is down, as
        the estimator's own predict has it). None for a regressor, or a classifier whose
        classes have no names recorded anywhere."""
        columns = [c for c in scored.columns if c.startswith("p_")]
        names = self.class_names
        if not columns or not names:
            return pd.Series(None, index=scored.index, dtype="object")
        classes = [int(c[2:]) for c in columns]
        unnamed = [c for c in classes if not 0 <= c < len(names)]
        if unnamed:
            raise ValueError(
                f"{self.name} {self.version}: classes {unnamed} have no name in class_names "
                f"{list(names)}"
            )
        likeliest = np.asarray(classes)[scored[columns].to_numpy().argmax(axis=1)]
        return pd.Series([names[c] for c in likeliest], index=scored.index, dtype="object")

    def predict(self, features: pd.DataFrame) -> pd.DataFrame:
        """Score rows of the features table: one output row per input row, index kept.

        Columns: ``prediction`` (in target units: probability of up for direction, class for
        momentum, 0-100 for risk, realised volatility, price for price), class
        probabilities ``p_<class>`` for classifiers, then ``outlier_score`` (distance to the
        version's training rows, ml/reference.py) and ``outlier`` (nullable boolean: score
        above the version's threshold; pd.NA for a version saved without a reference).
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
        scores, flags = self.outliers(x)
        out["outlier_score"] = scores
        out["outlier"] = flags
        return out
