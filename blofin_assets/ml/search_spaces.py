"""What tuning may change in each model, as Optuna distributions.

Only the parameters that shape what a model learns are searched; the ones that fix how it runs
(threads, seeds, the histogram method, the SVR cache, the MLP's batch and early stopping) stay
as the spec has them. Every range holds the spec's default, so the set in force is a point of
the space it is compared against. Counts and scales that matter by ratio are searched on a log
scale. A tuple parameter (the MLP's layers) is a string category, since Optuna's categories
must be plain values: "32,16" is (32, 16).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from blofin_assets.ml.specs import ModelSpec

SEARCH_SPACES: dict[str, dict[str, BaseDistribution]] = {
    "direction_predictor": {  # XGBClassifier
        "n_estimators": IntDistribution(50, 400, log=True),
        "max_depth": IntDistribution(2, 8),
        "learning_rate": FloatDistribution(0.01, 0.3, log=True),
        "min_child_weight": FloatDistribution(1.0, 300.0, log=True),
        "subsample": FloatDistribution(0.5, 1.0),
        "colsample_bytree": FloatDistribution(0.5, 1.0),
    },
    "momentum_classifier": {  # RandomForestClassifier; max_samples stays (it bounds the cost)
        "n_estimators": IntDistribution(50, 300, log=True),
        "max_depth": IntDistribution(3, 20),
        "min_samples_leaf": IntDistribution(5, 300, log=True),
        "max_features": CategoricalDistribution(("sqrt", "log2", 0.25, 0.5)),
    },
    "risk_scorer": {  # HistGradientBoostingRegressor
        "learning_rate": FloatDistribution(0.01, 0.3, log=True),
        "max_iter": IntDistribution(50, 400, log=True),
        "max_leaf_nodes": IntDistribution(7, 63, log=True),
        "min_samples_leaf": IntDistribution(20, 500, log=True),
        "l2_regularization": FloatDistribution(0.0, 10.0),
    },
    "volatility_regressor": {  # SVR on standardised features and a standardised log target
        "C": FloatDistribution(0.1, 30.0, log=True),
        "epsilon": FloatDistribution(0.01, 0.5, log=True),
    },
    "price_predictor": {  # MLPRegressor
        "alpha": FloatDistribution(1e-3, 100.0, log=True),
        "learning_rate_init": FloatDistribution(1e-4, 1e-2, log=True),
        "hidden_layer_sizes": CategoricalDistribution(("16", "32", "32,16", "64,32", "64,32,16")),
    },
}


def search_space(spec: ModelSpec) -> dict[str, BaseDistribution]:
    """The distributions tuning samples for this model (by its name), checked against its
    estimator: a searched name the estimator does not take would fail every trial."""
    space = SEARCH_SPACES.get(spec.name)
    if space is None:
        raise ValueError(
            f"no search space for model {spec.name!r}; known models: {sorted(SEARCH_SPACES)}"
        )
    accepted = spec.estimator_class().get_params()
    unknown = sorted(name for name in space if name not in accepted)
    if unknown:
        raise ValueError(
            f"{spec.name}: the search space names {unknown}, which "
            f"{spec.estimator_class.__name__} does not take"
        )
    return dict(space)


def encode_tuple(value: tuple[int, ...]) -> str:
    return ",".join(str(int(part)) for part in value)


def decode_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(","))


def is_tuple_param(spec: ModelSpec, name: str) -> bool:
    """Tuple parameters travel as strings through Optuna (which stores plain values only)."""
    return isinstance(spec.params.get(name), tuple | list)


def to_search_values(spec: ModelSpec, params: Mapping[str, Any]) -> dict[str, Any]:
    """The searched subset of a full parameter set, as Optuna values (tuples as strings):
    what trial 0 is enqueued with."""
    space = search_space(spec)
    return {
        name: encode_tuple(value) if is_tuple_param(spec, name) else value
        for name, value in params.items()
        if name in space
    }


def from_search_values(spec: ModelSpec, sampled: Mapping[str, Any]) -> dict[str, Any]:
    """Optuna's sampled values as estimator parameters (strings back to tuples)."""
    return {
        name: decode_tuple(value) if is_tuple_param(spec, name) else value
        for name, value in sampled.items()
    }


def widened_space(
    space: Mapping[str, BaseDistribution], values: Mapping[str, Any]
) -> dict[str, BaseDistribution]:
    """The space with the in-force categories added where they are not choices already.

    Optuna refuses an enqueued category outside the choices but takes an out-of-range number
    (with a warning), so only categories need this for trial 0 to be the set in force.
    """
    widened = dict(space)
    for name, distribution in space.items():
        value = values.get(name)
        if isinstance(distribution, CategoricalDistribution) and value not in distribution.choices:
            widened[name] = CategoricalDistribution((*distribution.choices, value))
    return widened
