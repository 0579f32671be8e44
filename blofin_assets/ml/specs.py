"""The five models as data: one ``ModelSpec`` each, one factory builds their assets.

A spec's ``code_version`` is a hash of everything that changes what the model learns
(estimator class, params, features, target, transforms, row cap), so editing one model's
hyperparameters marks exactly that model stale in Dagster, with no hand-bumped strings.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestClassifier
from sklearn.neural_network import MLPRegressor
from sklearn.svm import SVR
from xgboost import XGBClassifier

from blofin_assets.ml.features import FEATURE_COLUMNS

SEED = 42
# Day of week is left out of the model inputs: a 14-day window holds two samples of each
# weekday, so the encoding identifies individual days and lets models memorise their drift
# and volatility (measured: higher train scores, lower test scores). Time of day repeats daily.
MODEL_FEATURES: tuple[str, ...] = tuple(f for f in FEATURE_COLUMNS if not f.startswith("dow_"))

# Rules learned from the training block rather than read from `targets`: the majority class,
# a fair coin (its expected scores), the training share of ups as a probability, the mean.
COMPUTED_BASELINES = ("majority_class", "coin_flip", "base_rate", "training_mean")

Task = Literal["classification", "regression"]
TargetTransform = Literal["none", "log", "log_return"]
# How a row cap picks its rows: the most recent ones, or evenly spaced over the whole
# training block (keeps every regime and time of day in a small sample).
RowSampling = Literal["recent", "even"]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    target: str
    task: Task
    estimator_class: type
    params: Mapping[str, Any]
    primary_metric: str
    # Every naive rule of the target: naive_* columns of `targets` (forecasts known at t) and
    # COMPUTED_BASELINES (learned from the training block). The strongest of them on the test
    # rows is the baseline, so a model is never judged against a straw man.
    baselines: tuple[str, ...]
    kind: str
    target_transform: TargetTransform = "none"
    scale_target: bool = False
    # Caps the training rows of super-linear or slow estimators. None = all rows.
    max_train_rows: int | None = None
    row_sampling: RowSampling = "recent"
    # Caps the rows scored for evaluation (evenly spaced over the test block) for estimators
    # whose prediction is costly (kernel SVR: O(test rows x support vectors)). None = all.
    max_test_rows: int | None = None
    # metric -> value above which a test score is implausible for this target (leakage alarm).
    leakage_limits: Mapping[str, float] = field(default_factory=dict)
    # Skill drop (absolute) against the median of recent promoted versions. Hourly runs share
    # >99% of their rows, so skill moves little between them; a drop of 0.10 is a real change.
    regression_warn_drop: float = 0.05
    regression_error_drop: float = 0.10
    features: tuple[str, ...] = MODEL_FEATURES
    # The live_skill check (forward/live_skill.py); how a model is judged, not what it learns,
    # so fingerprint() leaves them out. A window with fewer scored predictions is not judged
    # (~100 bars of 3 instruments); WARN when 24 h skill is below the promoted skill by more
    # than the margin; ERROR only once the live record reaches back this many days of the week.
    live_min_predictions: int = 300
    live_skill_margin: float = 0.10
    live_error_days: float = 6.0
    # What the target is measured in, so an error is read in its unit (price MAE is a log
    # return, risk MAE score points); and the classifiers' class names, index = class.
    target_unit: str = ""
    class_names: tuple[str, ...] = ()

    @property
    def model_type(self) -> str:
        return self.estimator_class.__name__

    @property
    def baseline_columns(self) -> tuple[str, ...]:
        """The baselines read from `targets`; the computed ones come from the training block."""
        return tuple(c for c in self.baselines if c not in COMPUTED_BASELINES)

    def fingerprint(self) -> dict[str, Any]:
        """Everything that changes what is learned; what the code_version hashes."""
        return {
            "name": self.name,
            "estimator": f"{self.estimator_class.__module__}.{self.estimator_class.__name__}",
            "params": dict(sorted(self.params.items())),
            "features": list(self.features),
            "target": self.target,
            "task": self.task,
            "target_transform": self.target_transform,
            "scale_target": self.scale_target,
            "max_train_rows": self.max_train_rows,
            "row_sampling": self.row_sampling,
            "max_test_rows": self.max_test_rows,
            "primary_metric": self.primary_metric,
            "baselines": list(self.baselines),
        }

    @property
    def code_version(self) -> str:
        payload = json.dumps(self.fingerprint(), sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def build_estimator(self) -> Any:
        return self.estimator_class(**self.params)

    def with_params(self, params: Mapping[str, Any]) -> ModelSpec:
        """The same model trained with another parameter set (an adopted tuning result)."""
        return replace(self, params=dict(params))

    @property
    def params_id(self) -> str:
        """Names one parameter set: what ml_model_results records beside each version."""
        return params_id(self.params)


def params_id(params: Mapping[str, Any]) -> str:
    payload = json.dumps(dict(sorted(params.items())), sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


MODEL_SPECS: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="direction_predictor",
        description="Probability that close[t+H] > close[t]. On liquid markets expect a coin flip; "
        "accuracy far above 0.5 is investigated as leakage before it is believed.",
        target="target_direction",
        task="classification",
        estimator_class=XGBClassifier,
        # 100 trees at 0.1 rather than 200 at 0.05, 64 histogram bins rather than 256, and
        # at most 1,000,000 training rows evenly spaced per instrument: no worse beyond noise
        # at workloads M and W, in less time (benchmarks/results/estimators.md).
        params={
            "n_estimators": 100,
            "max_depth": 3,
            "learning_rate": 0.1,
            "max_bin": 64,
            "subsample": 0.8,
            "colsample_bytree": 0.8,
            "min_child_weight": 50,
            "tree_method": "hist",
            "n_jobs": 2,
            "random_state": SEED,
            "eval_metric": "logloss",
        },
        primary_metric="accuracy",
        baselines=(
            "majority_class",
            "coin_flip",
            "base_rate",
            "naive_direction_last_h",
            "naive_direction_last_bar",
        ),
        kind="xgboost",
        max_train_rows=1_000_000,
        row_sampling="even",
        leakage_limits={"accuracy": 0.75},
        target_unit="class (0 down, 1 up)",
        class_names=("down", "up"),
        regression_warn_drop=0.03,
        regression_error_drop=0.10,
    ),
    ModelSpec(
        name="momentum_classifier",
        description="3 classes: 0 decelerating / 1 neutral / 2 accelerating (forward minus "
        "trailing H-bar return, in units of trailing volatility).",
        target="target_momentum",
        task="classification",
        estimator_class=RandomForestClassifier,
        # Half the features tried at each split: the class depends on the trailing return and
        # the trailing volatility together, which 4 random features of 24 rarely offer one
        # split. 50 trees of 10,000 rows and at most 500,000 training rows: better than the
        # former 100 trees of 20,000 with sqrt beyond noise, in less time (estimators.md).
        params={
            "n_estimators": 50,
            "max_depth": 10,
            "min_samples_leaf": 50,
            "max_samples": 10_000,
            "max_features": 0.5,
            "n_jobs": 2,
            "random_state": SEED,
        },
        primary_metric="accuracy",
        baselines=("majority_class", "naive_momentum_zero_forward"),
        kind="sklearn",
        max_train_rows=500_000,
        row_sampling="even",
        leakage_limits={"accuracy": 0.90},
        target_unit="class (0 decelerating, 1 neutral, 2 accelerating)",
        class_names=("decelerating", "neutral", "accelerating"),
    ),
    ModelSpec(
        name="risk_scorer",
        description="Risk 0-100 of the next H bars: 50 = as volatile as the instrument's last "
        "day, higher = more. Judged against the strongest on the test rows of persistence of the "
        "last H bars' risk, the constant day level 50 and the training mean.",
        target="target_risk",
        task="regression",
        estimator_class=HistGradientBoostingRegressor,
        params={
            "max_iter": 200,
            "learning_rate": 0.05,
            "max_leaf_nodes": 31,
            "min_samples_leaf": 100,
            "l2_regularization": 1.0,
            "early_stopping": False,
            "random_state": SEED,
        },
        primary_metric="mae",
        baselines=("naive_risk", "naive_risk_level", "training_mean"),
        # At most 500,000 training rows, evenly spaced per instrument: no worse beyond noise
        # at workload W than all of them, in a fraction of the fit (estimators.md).
        max_train_rows=500_000,
        row_sampling="even",
        kind="sklearn",
        leakage_limits={"r2": 0.95},
        target_unit="risk score points (0-100)",
    ),
    ModelSpec(
        name="volatility_regressor",
        description="Realised volatility over the next H bars (RBF SVR, learnt in log space, "
        "standardised; SVR is super-linear in rows, so it trains on 5,000 rows evenly spaced "
        "over the training block).",
        target="target_volatility",
        task="regression",
        estimator_class=SVR,
        # epsilon 0.5 (of the standardised log target) rather than 0.1: fewer support vectors,
        # so a faster fit and test prediction, no worse test MAE beyond noise (estimators.md).
        params={"kernel": "rbf", "C": 1.0, "epsilon": 0.5, "gamma": "scale", "cache_size": 500},
        primary_metric="mae",
        baselines=("naive_volatility", "naive_volatility_level", "training_mean"),
        kind="sklearn",
        target_transform="log",
        scale_target=True,
        max_train_rows=5_000,
        row_sampling="even",
        max_test_rows=20_000,
        leakage_limits={"r2": 0.95},
        target_unit="realised volatility of the next H bars (log-return units, not annualised)",
    ),
    ModelSpec(
        name="price_predictor",
        description="Close H bars ahead. The MLP learns the H-bar log return (standardised) and "
        "the price is close * exp(prediction); judged on returns, against the stronger of a zero "
        "return (persistence) and the training mean return.",
        target="target_price",
        task="regression",
        estimator_class=MLPRegressor,
        params={
            "hidden_layer_sizes": (32, 16),
            # Strong L2: returns are close to unpredictable and a weakly penalised MLP fits the
            # noise, scoring below its naive baseline on the demo market.
            "alpha": 10.0,
            "learning_rate_init": 1e-3,
            "batch_size": 256,
            "max_iter": 50,
            "early_stopping": True,
            "validation_fraction": 0.1,
            "n_iter_no_change": 5,
            "random_state": SEED,
        },
        primary_metric="mae",
        baselines=("naive_price", "training_mean"),
        kind="sklearn",
        target_transform="log_return",
        scale_target=True,
        max_train_rows=100_000,
        leakage_limits={"r2": 0.95},
        target_unit="H-bar log return (0.001 = 0.1 %)",
    ),
)

SPECS_BY_NAME: dict[str, ModelSpec] = {spec.name: spec for spec in MODEL_SPECS}

# Metrics whose unit is not the target's own.
UNITLESS_METRICS = {
    "accuracy": "share of rows right (0-1)",
    "f1": "0-1",
    "precision": "0-1",
    "recall": "0-1",
    "log_loss": "nats per row (a coin: 0.693)",
    "brier": "squared probability error (a coin: 0.25)",
    "r2": "share of variance explained",
}


def metric_unit(spec: ModelSpec, metric: str) -> str:
    """The unit a metric of this model is read in: an error metric's is its target's."""
    return UNITLESS_METRICS.get(metric, spec.target_unit)
