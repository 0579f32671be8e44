"""Which features a fitted model leans on, measured on its test rows, with the method named.

Every model, trees included, gets the same measure: permutation importance on the test block,
scored by the model's primary metric. One reason decides it: impurity and gain importances
count how much a tree used a feature to fit its *training* rows, so a model with no skill still
ranks its features confidently; the permutation asks what the feature is worth on rows the
model never saw, in the metric its skill is judged by, and says "nothing" when nothing is there
(a consequence: the five models' numbers share one meaning and unit convention).

The permutation is computed here rather than by ``sklearn.inspection.permutation_importance``
for two measured reasons: that function calls ``predict`` once per feature and repeat, and a
forest's predict costs ~25 ms however few rows it gets (100 trees dispatched in Python), so
the random forest alone took ~1.8 s; here every shuffled copy goes through one ``predict``.
And its spread across repeats ignores which rows were sampled, so on a small sample it
understated the error several times over; here the standard error is taken over the rows.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from blofin_assets.ml.metrics import row_losses
from blofin_assets.ml.specs import SEED

# Metrics whose row losses average to the metric itself (accuracy as its complement), so the
# importance is read in the metric's own unit; and which way a useful feature moves it.
SHUFFLE_EFFECT = {"accuracy": "drop", "mae": "rise"}
REPEATS = 1  # for a fixed cost, more rows beat more shuffles of the same rows
# The cost, in rows predicted, of the shuffled copies: ~0.1-0.3 s for the forests, boosters and
# MLP (2-5 us a row on the demo market). A kernel machine pays every support vector on every
# row (SVR: ~0.2 ms a row with 4,300 of them), so its budget is in kernel evaluations.
PREDICTED_ROWS = 50_000
KERNEL_EVALUATIONS = 10_000_000
MAX_ROWS = 2_000
MIN_ROWS = 50


@dataclass(frozen=True)
class FeatureImportance(Mapping[str, float]):
    """How much each feature is worth to a model, largest first; ``method`` says how that was
    measured. Read as a mapping (feature -> importance) it is the ranking itself, so code that
    took the former plain dict of importances reads it unchanged."""

    method: str
    scores: dict[str, float]  # feature -> importance, largest first
    stderr: dict[str, float]  # feature -> standard error over the sampled rows, same order

    def __getitem__(self, feature: str) -> float:
        return self.scores[feature]

    def __iter__(self) -> Iterator[str]:
        return iter(self.scores)

    def __len__(self) -> int:
        return len(self.scores)


def support_vector_count(estimator: Any) -> int | None:
    """The support vectors a kernel machine compares every row with (None: not one)."""
    inner = getattr(estimator, "regressor_", estimator)  # inside a TransformedTargetRegressor
    support = getattr(inner, "support_vectors_", None)
    return None if support is None else len(support)


def sample_size(estimator: Any, copies: int, available: int) -> int:
    """Rows to shuffle on so that predicting ``copies`` shuffled copies of them stays cheap."""
    support = support_vector_count(estimator)
    budget = PREDICTED_ROWS if support is None else KERNEL_EVALUATIONS // max(support, 1)
    return min(available, max(MIN_ROWS, min(MAX_ROWS, budget // copies)))


def evenly_spaced_index(available: int, rows: int) -> np.ndarray:
    """Positions of ``rows`` rows spread evenly over ``available``: every stretch of the test
    block (and each instrument in it) is represented, and no random draw picks them."""
    return np.unique(np.linspace(0, available - 1, rows).round().astype(int))


def method_name(metric: str, rows: int, repeats: int) -> str:
    plural = "" if repeats == 1 else "s"
    return (
        f"permutation on {rows} test rows, {repeats} repeat{plural}, scored by {metric} "
        f"({SHUFFLE_EFFECT[metric]} when a feature is shuffled)"
    )


def feature_importance(
    estimator: Any,
    features: Sequence[str],
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    metric: str,
    repeats: int = REPEATS,
    seed: int = SEED,
) -> FeatureImportance:
    """Permutation importance on an evenly spaced sample of the (scaled) test block.

    A feature's importance is the mean rise of the metric's row loss when its column is
    shuffled among the sampled rows (accuracy: the drop in accuracy; mae: the rise in MAE, in
    the space ``estimator.predict`` is evaluated in). Only the rows given are read, so pass the
    test block: on training rows a memorised feature would look useful.
    """
    if metric not in SHUFFLE_EFFECT:
        raise ValueError(f"no permutation importance for metric {metric!r}: {list(SHUFFLE_EFFECT)}")
    names = list(features)
    if x_test.shape[1] != len(names):
        raise ValueError(f"{x_test.shape[1]} columns but {len(names)} feature names")
    copies = len(names) * repeats
    index = evenly_spaced_index(len(x_test), sample_size(estimator, copies + 1, len(x_test)))
    x, y = x_test[index], np.asarray(y_test)[index]
    rng = np.random.default_rng(seed)
    shuffled = np.tile(x, (copies, 1))
    for copy in range(copies):  # copy = feature * repeats + repeat
        column = copy // repeats
        block = slice(copy * len(x), (copy + 1) * len(x))
        shuffled[block, column] = x[rng.permutation(len(x)), column]
    predicted = np.asarray(estimator.predict(np.vstack([x, shuffled])))
    base = row_losses(metric, y, predicted[: len(x)])
    rises = row_losses(metric, np.tile(y, copies), predicted[len(x) :]) - np.tile(base, copies)
    per_row = rises.reshape(len(names), repeats, len(x)).mean(axis=1)  # feature x row
    means = per_row.mean(axis=1)
    errors = per_row.std(axis=1, ddof=1) / np.sqrt(len(x)) if len(x) > 1 else np.zeros(len(names))
    order = sorted(range(len(names)), key=lambda i: -means[i])  # stable: ties keep input order
    return FeatureImportance(
        method=method_name(metric, len(x), repeats),
        scores={names[i]: float(means[i]) for i in order},
        stderr={names[i]: float(errors[i]) for i in order},
    )


def importance_markdown(importance: FeatureImportance, top: int = 15) -> str:
    """The ``top`` features as a ranked table, the method stated above it."""
    lines = [
        f"Method: {importance.method}.",
        "",
        "| rank | feature | importance | ± s.e. |",
        "| --- | --- | --- | --- |",
    ]
    for rank, (name, value) in enumerate(list(importance.items())[:top], start=1):
        lines.append(f"| {rank} | {name} | {value:.4g} | {importance.stderr[name]:.2g} |")
    return "\n".join(lines)


def importance_chart_png(importance: FeatureImportance, title: str, top: int = 15) -> bytes:
    """The ``top`` features as horizontal bars, largest on top, ± one standard error.

    Drawn on a Figure with its own Agg canvas (no pyplot, no backend switch). matplotlib is
    imported here, not with the module: training imports this module and would pay ~0.4 s.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(importance)[:top][::-1]  # barh draws bottom-up
    values = [importance[name] for name in names]
    errors = [importance.stderr[name] for name in names]
    figure = Figure(figsize=(8, 1.2 + 0.32 * max(len(names), 1)), dpi=90)
    canvas = FigureCanvasAgg(figure)
    axis = figure.subplots()
    axis.barh(names, values, xerr=errors, color="tab:blue", ecolor="grey", capsize=2)
    axis.axvline(0.0, color="grey", linewidth=0.5)
    axis.set_title(title)
    axis.set_xlabel("\n".join(textwrap.wrap(importance.method, 90)), fontsize="small")
    figure.tight_layout()
    buffer = io.BytesIO()
    canvas.print_png(buffer)
    return buffer.getvalue()
