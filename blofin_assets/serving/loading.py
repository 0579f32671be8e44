"""Load a served model from another program, safely.

pickle runs code when it loads, so nothing is unpickled before its sha256 matches the one
the DuckDB file records for it (serving/integrity.py: a record that whoever can write the
models directory cannot rewrite, unlike metadata.json beside the files), and the version
directory is resolved once, so a promotion that happens while loading cannot mix two
versions. ``format="pickle-free"`` loads the version's pickle-free copy instead (skops with
an explicit trusted list, XGBoost's UBJ: ml/portable.py), verified the same way.

A served version is meant to be replaced every hour. ``load_model`` says when the one it
loads is older than ``BLOFIN_MODEL_MAX_AGE_HOURS`` (default 3): it warns, or refuses when
asked to (``refuse_expired=True``).
"""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path
from typing import Any, Literal

import joblib
import pandas as pd

from blofin_assets.market.clock import frozen_or_real_now
from blofin_assets.market.settings import DEFAULT_MODEL_MAX_AGE_HOURS, check_max_age_hours
from blofin_assets.ml.portable import MODEL_FILES, SKOPS_SCALER, load_pickle_free
from blofin_assets.ml.reference import OutlierReference, read_reference
from blofin_assets.ml.store import REFERENCE_FILE, ModelStore, sha256_file
from blofin_assets.serving.integrity import (
    DEFAULT_LOCK_WAIT_SECONDS,
    VERIFY_WITH,
    ModelIntegrityError,
    VerifyWith,
    database_record,
    metadata_record,
    verified_bytes,
)
from blofin_assets.serving.model import ServedModel

DEFAULT_MODELS_DIR = "models"
MAX_AGE_VARIABLE = "BLOFIN_MODEL_MAX_AGE_HOURS"
Format = Literal["pickle", "pickle-free"]
FORMATS = ("pickle", "pickle-free")


class ModelExpiredError(RuntimeError):
    """The served version is older than the age limit, and the caller asked to refuse it."""


class ModelExpiredWarning(UserWarning):
    """The served version is older than the age limit: its predictions are marked expired."""


def models_root(models_dir: str | Path | None) -> ModelStore:
    return ModelStore(models_dir or os.environ.get("BLOFIN_MODELS_DIR", DEFAULT_MODELS_DIR))


def max_age_limit(max_age_hours: float | None = None) -> float:
    """The age limit in hours: the argument, else BLOFIN_MODEL_MAX_AGE_HOURS, else 3."""
    if max_age_hours is not None:
        return check_max_age_hours(float(max_age_hours), "max_age_hours")
    text = os.environ.get(MAX_AGE_VARIABLE) or str(DEFAULT_MODEL_MAX_AGE_HOURS)
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{MAX_AGE_VARIABLE}={text!r}: expected a number of hours") from None
    return check_max_age_hours(value, MAX_AGE_VARIABLE)


def expired(model: ServedModel, now: pd.Timestamp, max_age_hours: float) -> bool | None:
    """Older than ``max_age_hours`` at ``now``; None when its age is unknown."""
    age = model.age_hours(now)
    return None if age is None else age > max_age_hours


def expiry_message(model: ServedModel, now: pd.Timestamp, max_age_hours: float) -> str:
    age = model.age_hours(now)
    if age is None:
        return f"{model.name} version {model.version}: metadata.json records no data_until"
    return (
        f"{model.name} version {model.version} learnt from bars up to "
        f"{model.data_until.isoformat()}, {age:.2f} h before now ({now.isoformat()}): older "
        "than the limit of "
        f"{max_age_hours:g} h ({MAX_AGE_VARIABLE}); the hourly retraining has not replaced it"
    )


def load_served(
    name: str,
    models_dir: str | Path | None = None,
    *,
    duckdb_path: str | Path | None = None,
    verify_with: VerifyWith = "duckdb",
    format: Format = "pickle",
    lock_wait_seconds: float = DEFAULT_LOCK_WAIT_SECONDS,
) -> ServedModel:
    """The served version of ``name``, verified before anything is unpickled; no age policy
    (the caller records the age itself, as model_predictions does)."""
    store = models_root(models_dir)
    directory = store.served_dir(name)
    if directory is None or not directory.is_dir():
        raise ModelIntegrityError(
            f"no served version of {name!r} under {store.model_dir(name)}: materialize it first"
        )
    # The link is read once: the version directory itself never changes once written.
    return load_version(
        name,
        directory.name,
        store.root,
        duckdb_path=duckdb_path,
        verify_with=verify_with,
        format=format,
        lock_wait_seconds=lock_wait_seconds,
    )


def load_model(
    name: str,
    models_dir: str | Path | None = None,
    *,
    duckdb_path: str | Path | None = None,
    verify_with: VerifyWith = "duckdb",
    format: Format = "pickle",
    lock_wait_seconds: float = DEFAULT_LOCK_WAIT_SECONDS,
    max_age_hours: float | None = None,
    refuse_expired: bool = False,
    now: pd.Timestamp | None = None,
) -> ServedModel:
    """The served version of ``name``, verified before anything is unpickled.

    Each file is checked against the hashes recorded in the DuckDB file at ``duckdb_path``
    (default BLOFIN_DUCKDB_PATH, else data/blofin.duckdb), opened read-only; a version it has
    no record of is refused. ``verify_with="metadata"`` checks against metadata.json instead
    (weaker: it sits beside the files). ``format="pickle-free"`` loads model.skops or
    model.ubj and scaler.skops instead of the pickles. ModelIntegrityError on any refusal.

    Older than ``max_age_hours`` (default BLOFIN_MODEL_MAX_AGE_HOURS, else 3) at ``now``
    (default BLOFIN_AS_OF, else the real clock), or of unknown age: a ModelExpiredWarning,
    or ModelExpiredError with ``refuse_expired=True``."""
    limit = max_age_limit(max_age_hours)
    now = frozen_or_real_now(os.environ.get("BLOFIN_AS_OF", "")) if now is None else now
    model = load_served(
        name,
        models_dir,
        duckdb_path=duckdb_path,
        verify_with=verify_with,
        format=format,
        lock_wait_seconds=lock_wait_seconds,
    )
    if expired(model, now, limit) is not False:
        message = expiry_message(model, now, limit)
        if refuse_expired:
            raise ModelExpiredError(f"refusing to serve it: {message}")
        warnings.warn(message, ModelExpiredWarning, stacklevel=2)
    return model


def load_reference(directory: Path, metadata: dict, features: list[str]) -> OutlierReference | None:
    """The version's reference.npz, sha256-verified; None for a version saved without one."""
    path = directory / REFERENCE_FILE
    expected = (metadata.get("sha256") or {}).get(REFERENCE_FILE)
    if expected is None and not path.exists():
        return None
    if expected is None:
        raise ModelIntegrityError(f"{directory / 'metadata.json'} records no sha256 for {path}")
    if not path.is_file():
        raise ModelIntegrityError(f"{path} is missing (expected sha256 {expected})")
    if (actual := sha256_file(path)) != expected:
        raise ModelIntegrityError(f"{path} has sha256 {actual}, expected {expected}")
    try:
        reference = read_reference(path)
    except (OSError, ValueError) as error:
        raise ModelIntegrityError(f"{path}: unreadable outlier reference ({error})") from error
    if list(reference.features) != features:
        raise ModelIntegrityError(
            f"{path}: reference features {list(reference.features)} are not the config's {features}"
        )
    return reference


def load_version(
    name: str,
    version: str,
    models_dir: str | Path | None = None,
    *,
    duckdb_path: str | Path | None = None,
    verify_with: VerifyWith = "duckdb",
    format: Format = "pickle",
    lock_wait_seconds: float = DEFAULT_LOCK_WAIT_SECONDS,
) -> ServedModel:
    """Any kept version of ``name`` (served or not), verified exactly as the served one is:
    the forward record replays the versions that served each past hour."""
    if verify_with not in VERIFY_WITH or format not in FORMATS:
        raise ValueError(
            f"verify_with={verify_with!r}, format={format!r}: expected one of {VERIFY_WITH} "
            f"and one of {FORMATS}"
        )
    store = models_root(models_dir)
    directory = store.version_dir(name, version)
    if not directory.is_dir():
        raise ModelIntegrityError(f"no version {version!r} of {name!r} at {directory}")
    metadata = version_metadata(directory, version)
    if verify_with == "duckdb":
        expected, vouched_by = database_record(name, version, duckdb_path, lock_wait_seconds)
    else:
        expected, vouched_by = metadata_record(directory, metadata)
    files = served_files(format, expected)
    data = verified_bytes(
        directory, [*files, "config.json"], expected, vouched_by, unless_unrecorded=["config.json"]
    )
    try:
        config = json.loads(data["config.json"])
    except ValueError as error:
        raise ModelIntegrityError(f"{directory}: unreadable config.json ({error})") from error
    # reference.npz holds numpy arrays only (read without pickle): a version recorded without
    # its hash in the database is checked against metadata.json's.
    hashes = {**(metadata.get("sha256") or {}), **expected}
    reference = load_reference(directory, {"sha256": hashes}, list(config["features"]))
    estimator, scaler = estimator_and_scaler(format, files, data, config)
    expected_inputs = getattr(scaler, "n_features_in_", None)
    if expected_inputs is not None and expected_inputs != len(config["features"]):
        raise ModelIntegrityError(
            f"{directory}: scaler expects {expected_inputs} inputs, config lists "
            f"{len(config['features'])} features"
        )
    return ServedModel(
        name=name,
        version=version,
        estimator=estimator,
        scaler=scaler,
        config=config,
        metadata=metadata,
        reference=reference,
    )


def version_metadata(directory: Path, version: str) -> dict[str, Any]:
    """metadata.json (JSON: parsing it runs no code), naming the folder's own version."""
    try:
        metadata = json.loads((directory / "metadata.json").read_text())
    except (OSError, ValueError) as error:
        raise ModelIntegrityError(f"{directory}: unreadable metadata.json ({error})") from error
    if metadata.get("version") != version:
        raise ModelIntegrityError(
            f"{directory / 'metadata.json'} says version {metadata.get('version')!r}, its "
            f"folder is {version!r}"
        )
    return metadata


def estimator_and_scaler(
    format: Format, files: list[str], data: dict[str, bytes], config: dict[str, Any]
) -> tuple[Any, Any]:
    """Loaded from the verified bytes themselves, so nothing can swap a file after its check."""
    if format == "pickle":
        return joblib.load(io.BytesIO(data["model.pkl"])), joblib.load(
            io.BytesIO(data["scaler.pkl"])
        )
    return load_pickle_free(files[0], data[files[0]], data[SKOPS_SCALER], config.get("model_type"))


def served_files(format: Format, expected: dict[str, Any]) -> list[str]:
    """The model and scaler files to load: the pickles, or the pickle-free copies (model.ubj
    for XGBoost, else model.skops; the record names which one the version has)."""
    if format == "pickle":
        return ["model.pkl", "scaler.pkl"]
    model = next((f for f in MODEL_FILES if f in expected), MODEL_FILES[0])
    return [model, SKOPS_SCALER]
