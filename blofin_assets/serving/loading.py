"""Load a served model from another program, safely.

pickle runs code when it loads, so nothing is unpickled before its sha256 matches the one
recorded in metadata.json, and the version directory is resolved once, so a promotion that
happens while loading cannot mix two versions.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import joblib

from blofin_assets.ml.store import ModelStore, hash_problems
from blofin_assets.serving.model import ServedModel

DEFAULT_MODELS_DIR = "models"


class ModelIntegrityError(RuntimeError):
    """A served file is missing, truncated or not the one that was trained."""


def models_root(models_dir: str | Path | None) -> ModelStore:
    return ModelStore(models_dir or os.environ.get("BLOFIN_MODELS_DIR", DEFAULT_MODELS_DIR))


def load_model(name: str, models_dir: str | Path | None = None) -> ServedModel:
    """The served version of ``name``, verified before anything is unpickled."""
    store = models_root(models_dir)
    directory = store.served_dir(name)
    if directory is None or not directory.is_dir():
        raise ModelIntegrityError(
            f"no served version of {name!r} under {store.model_dir(name)}: materialize it first"
        )
    # The link is read once: the version directory itself never changes once written.
    return load_version(name, directory.name, store.root)


def load_version(name: str, version: str, models_dir: str | Path | None = None) -> ServedModel:
    """Any kept version of ``name`` (served or not), verified exactly as the served one is:
    the forward record replays the versions that served each past hour."""
    store = models_root(models_dir)
    directory = store.version_dir(name, version)
    if not directory.is_dir():
        raise ModelIntegrityError(f"no version {version!r} of {name!r} at {directory}")
    try:
        metadata = json.loads((directory / "metadata.json").read_text())
        config = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError) as error:
        raise ModelIntegrityError(f"{directory}: unreadable config/metadata ({error})") from error
    problems = hash_problems(directory, metadata)
    if problems:
        raise ModelIntegrityError(
            "refusing to unpickle files that are not the ones trained: " + "; ".join(problems)
        )
    estimator = joblib.load(directory / "model.pkl")
    scaler = joblib.load(directory / "scaler.pkl")
    expected_inputs = getattr(scaler, "n_features_in_", None)
    if expected_inputs is not None and expected_inputs != len(config["features"]):
        raise ModelIntegrityError(
            f"{directory}: scaler expects {expected_inputs} inputs, config lists "
            f"{len(config['features'])} features"
        )
    return ServedModel(
        name=name,
        version=metadata["version"],
        estimator=estimator,
        scaler=scaler,
        config=config,
        metadata=metadata,
    )
