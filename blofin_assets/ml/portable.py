"""A pickle-free copy of every version, for programs that refuse to unpickle.

Unpickling runs whatever code the file names, so a program that will not trust a pickle gets
the same model in formats that only describe it: the XGBoost classifier in XGBoost's own
UBJSON (a tree dump: loading it builds a booster, nothing else), every scikit-learn estimator
and the scaler as skops files, which rebuild only the types they are told to trust. The
trusted lists below are explicit and minimal (what ``skops.io.get_untrusted_types`` reports
for each estimator, nothing more); skops' own defaults already cover builtins, numpy arrays,
numpy ufuncs such as the log/exp of the volatility target and scikit-learn's estimators.
Saving refuses a file that needs a type the list lacks, so a new estimator is reviewed here
before it ships rather than trusted wholesale (never ``trusted=True``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import skops.io as skops_io
from xgboost import XGBClassifier, XGBModel

SKOPS_MODEL = "model.skops"
XGBOOST_MODEL = "model.ubj"
SKOPS_SCALER = "scaler.skops"
MODEL_FILES = (SKOPS_MODEL, XGBOOST_MODEL)
FORMATS = {SKOPS_MODEL: "skops", XGBOOST_MODEL: "xgboost-ubj", SKOPS_SCALER: "skops"}

# Per estimator class (config.json's model_type): the types its skops file holds beyond
# skops' defaults, as get_untrusted_types reports them. The scaler and any estimator not
# named (SVR, a test's LinearRegression) need none.
TRUSTED_TYPES: Mapping[str, tuple[str, ...]] = {
    "HistGradientBoostingRegressor": (
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    ),
    "RandomForestClassifier": ("sklearn.tree._tree.Tree",),
    "MLPRegressor": ("sklearn.neural_network._stochastic_optimizers.AdamOptimizer",),
    # The stacked direction model holds its five members whole: their types, XGBoost's
    # classifier and booster (a Booster is rebuilt from its own serialised buffer, as the UBJ
    # copy is), and the stacking class itself (restored by attribute, no code of its own runs).
    "StackedDirection": (
        "blofin_assets.ml.stacking.StackedDirection",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
        "sklearn.tree._tree.Tree",
        "xgboost.core.Booster",
        "xgboost.sklearn.XGBClassifier",
    ),
}


class UntrustedTypesError(ValueError):
    """A skops file would need a type that TRUSTED_TYPES does not list for its estimator."""


def trusted_types(model_type: str | None) -> list[str]:
    """The explicit list skops may rebuild beyond its defaults, for this estimator class."""
    return list(TRUSTED_TYPES.get(model_type or "", ()))


def skops_bytes(value: Any, model_type: str | None, what: str) -> bytes:
    """``value`` as a skops file, refused when it holds a type its trusted list lacks."""
    data = skops_io.dumps(value)
    extra = sorted(set(skops_io.get_untrusted_types(data=data)) - set(trusted_types(model_type)))
    if extra:
        raise UntrustedTypesError(
            f"the pickle-free copy of {what} ({model_type or type(value).__name__}) holds "
            f"{len(extra)} type(s) not in ml/portable.py TRUSTED_TYPES: {extra}. Review them "
            "and add them to that estimator's list"
        )
    return data


def xgboost_bytes(model: XGBModel) -> bytes:
    """XGBoost's own UBJSON, written in a private temporary folder (save_model takes a path
    only), so the bytes hashed are the bytes XGBoost wrote."""
    with tempfile.TemporaryDirectory(prefix="blofin-ubj-") as private:
        path = Path(private) / XGBOOST_MODEL
        model.save_model(path)
        return path.read_bytes()


def pickle_free_files(estimator: Any, scaler: Any, model_type: str | None) -> dict[str, bytes]:
    """The version's pickle-free files by name: model.ubj (XGBoost) or model.skops, and
    scaler.skops."""
    if isinstance(estimator, XGBModel):
        model = {XGBOOST_MODEL: xgboost_bytes(estimator)}
    else:
        model = {SKOPS_MODEL: skops_bytes(estimator, model_type, "the estimator")}
    return {**model, SKOPS_SCALER: skops_bytes(scaler, "StandardScaler", "the scaler")}


def load_pickle_free(
    model_file: str, model_data: bytes, scaler_data: bytes, model_type: str | None
) -> tuple[Any, Any]:
    """Estimator and scaler from their pickle-free bytes (already verified by the caller):
    skops with the explicit trusted list, the UBJ into a fresh XGBClassifier. No pickle."""
    if model_file == XGBOOST_MODEL:
        if model_type not in (None, "XGBClassifier"):
            raise ValueError(f"{model_file} holds an XGBoost model, config says {model_type}")
        estimator: Any = XGBClassifier()
        estimator.load_model(bytearray(model_data))
    elif model_file == SKOPS_MODEL:
        estimator = skops_io.loads(model_data, trusted=trusted_types(model_type))
    else:
        raise ValueError(f"{model_file!r} is not a pickle-free model file ({list(MODEL_FILES)})")
    scaler = skops_io.loads(scaler_data, trusted=trusted_types("StandardScaler"))
    return estimator, scaler
