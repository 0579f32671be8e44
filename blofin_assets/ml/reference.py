"""How far a feature row lies from the rows its model version was trained on.

A model answers anywhere, but only rows like its training rows are ones it has learned about.
Each version keeps a reference, saved beside its model as ``reference.npz`` (numpy arrays
only, nothing pickled), so any program scores a row the same way:

- ``rows``: an evenly spaced sample (at most ``REFERENCE_ROWS``, in time order, so every part
  of the training block and every instrument is in it) of the version's training rows in the
  space the estimator sees: after ``scaler.pkl`` (fit on the training block), as float32;
- ``outlier_score(x)`` = the mean Euclidean distance from ``scaler.transform(x)`` to its
  ``neighbours`` (10) nearest reference rows (``sklearn.neighbors.NearestNeighbors``),
  divided by ``scale``: the median of the same distance for the version's own training rows.
  A typical training row scores about 1;
- ``outlier`` = score > ``threshold``: the ``quantile`` (99.9 %) of the training rows' own
  scores. Those are up to ``CALIBRATION_ROWS`` evenly spaced training rows, each scored
  against the reference without itself (a row of the sample skips its own zero distance), so
  a training row is flagged 0.1 % of the time by construction.

Why k nearest neighbours rather than per-feature z-scores: the features are heavy-tailed
(returns, volume spikes) and correlated, so a row can be far from every training row with
each feature inside its own range; a single feature shows once it leaves the training range.
Measured on the demo market (3 instruments x 14 days of 1m bars, frozen clock), the test
block, later than and never seen by training, is flagged for 0.1 % (direction, momentum,
risk, price; threshold 4.3) and 0.3 % (volatility, whose SVR trains on 5,000 rows; 3.9) of
its 11,229 rows; every row built with all features x10 or shifted by 5 training standard
deviations is flagged; a single feature shifted by 10 sd is flagged for a few percent of
rows, by 20 sd for all. Building adds 0.04-0.15 s to a training, scoring about 7 us a row
(docs/internals.md has the figures and why).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from sklearn.neighbors import NearestNeighbors

from blofin_assets.ml.store import REFERENCE_FILE

METHOD = "knn_mean_distance_ratio"
REFERENCE_ROWS = 2_000
CALIBRATION_ROWS = 20_000
NEIGHBOURS = 10
QUANTILE = 0.999
# Brute force: exact distances and, on 2,000 rows of 24 features, 4x faster in bulk than a
# k-d tree. Its OpenMP threads would spin after each call and slow the estimators' own
# threads (the forest's predict 6x) unless OMP_WAIT_POLICY=PASSIVE, which the code
# location's entry point sets (process.py).
ALGORITHM = "brute"
ARRAYS = ("rows", "features", "neighbours", "scale", "threshold", "quantile", "method")


def evenly_spaced_index(n: int, count: int) -> np.ndarray:
    """``count`` positions spread evenly over ``range(n)`` (all of them if n <= count)."""
    if n <= count:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, count).round().astype(np.int64))


@dataclass(frozen=True, eq=False)
class OutlierReference:
    """A version's training rows, sampled and scaled, and the threshold calibrated on them."""

    rows: np.ndarray  # (n, features) float32, in the scaled space
    features: tuple[str, ...]
    neighbours: int
    scale: float
    threshold: float
    quantile: float
    method: str = METHOD

    @cached_property
    def index(self) -> NearestNeighbors:
        return NearestNeighbors(n_neighbors=self.neighbours, algorithm=ALGORITHM).fit(
            self.rows.astype("float64")
        )

    def scores(self, scaled: np.ndarray) -> np.ndarray:
        """The outlier score of each row of ``scaled`` (already through the version's scaler)."""
        scaled = np.asarray(scaled, dtype="float64")
        if scaled.ndim != 2 or scaled.shape[1] != self.rows.shape[1]:
            raise ValueError(
                f"outlier reference holds {self.rows.shape[1]} features, rows have shape "
                f"{scaled.shape}"
            )
        if len(scaled) == 0:
            return np.empty(0)
        distances, _ = self.index.kneighbors(scaled)
        return distances.mean(axis=1) / self.scale

    def flags(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores) > self.threshold

    def arrays(self) -> dict[str, np.ndarray]:
        """What ``reference.npz`` holds; every value a plain numpy array (no pickle)."""
        return {
            "rows": self.rows.astype("float32"),
            "features": np.asarray(self.features, dtype=str),
            "neighbours": np.asarray(self.neighbours, dtype="int64"),
            "scale": np.asarray(self.scale, dtype="float64"),
            "threshold": np.asarray(self.threshold, dtype="float64"),
            "quantile": np.asarray(self.quantile, dtype="float64"),
            "method": np.asarray(self.method, dtype=str),
        }

    def summary(self) -> dict[str, object]:
        """For metadata.json: what a reader needs to know without opening the file."""
        return {
            "file": REFERENCE_FILE,
            "method": self.method,
            "rows": len(self.rows),
            "neighbours": self.neighbours,
            "scale": self.scale,
            "threshold": self.threshold,
            "quantile": self.quantile,
        }


def build_reference(
    scaled_train: np.ndarray,
    features: Sequence[str],
    *,
    reference_rows: int = REFERENCE_ROWS,
    calibration_rows: int = CALIBRATION_ROWS,
    neighbours: int = NEIGHBOURS,
    quantile: float = QUANTILE,
) -> OutlierReference:
    """The reference of a version trained on ``scaled_train`` (its training rows, scaled)."""
    x = np.asarray(scaled_train, dtype="float64")
    if x.ndim != 2 or x.shape[1] != len(features) or len(x) < 2:
        raise ValueError(
            f"an outlier reference needs at least 2 training rows of {len(features)} features, "
            f"got shape {x.shape}"
        )
    k = min(neighbours, len(x) - 1)
    sample = evenly_spaced_index(len(x), reference_rows)
    rows = x[sample].astype("float32")
    calibration = evenly_spaced_index(len(x), calibration_rows)
    in_sample = np.isin(calibration, sample)
    index = NearestNeighbors(n_neighbors=k + 1, algorithm=ALGORITHM).fit(rows.astype("float64"))
    distances, _ = index.kneighbors(x[calibration])
    # A row of the sample finds itself first: it is scored on the k rows after it.
    own = np.where(in_sample[:, None], distances[:, 1:], distances[:, :k]).mean(axis=1)
    median, positive = float(np.median(own)), own[own > 0]
    # Mostly repeated rows (a perfectly periodic market): the mean of the distances that are
    # not zero, else a unit scale; any row unlike them is then far.
    scale = median if median > 0 else float(positive.mean()) if positive.size else 1.0
    threshold = float(np.quantile(own / scale, quantile))
    return OutlierReference(
        rows=rows,
        features=tuple(features),
        neighbours=k,
        scale=scale,
        threshold=threshold,
        quantile=quantile,
    )


def reference_from_arrays(arrays: Mapping[str, np.ndarray], where: str) -> OutlierReference:
    """The reference ``arrays`` (as ``reference.npz`` holds them) describe; ``where`` names
    the file in the error when one is missing or malformed."""
    missing = [name for name in ARRAYS if name not in arrays]
    if missing:
        raise ValueError(f"{where}: outlier reference lacks arrays {missing}")
    rows = np.asarray(arrays["rows"])
    features = tuple(str(f) for f in np.asarray(arrays["features"]).ravel())
    neighbours = int(arrays["neighbours"])
    if rows.ndim != 2 or rows.shape[1] != len(features) or not 1 <= neighbours < len(rows):
        raise ValueError(
            f"{where}: reference rows have shape {rows.shape} for {len(features)} features "
            f"and {neighbours} neighbours"
        )
    return OutlierReference(
        rows=rows.astype("float32"),
        features=features,
        neighbours=neighbours,
        scale=float(arrays["scale"]),
        threshold=float(arrays["threshold"]),
        quantile=float(arrays["quantile"]),
        method=str(arrays["method"]),
    )


def read_reference(path: Path) -> OutlierReference:
    """Load ``reference.npz`` without unpickling anything (``allow_pickle=False``)."""
    with np.load(path, allow_pickle=False) as arrays:
        return reference_from_arrays({name: arrays[name] for name in arrays.files}, str(path))
