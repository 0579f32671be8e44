"""Tampering, not only corruption: whoever can write the models directory (pickles and their
metadata.json alike) but not the DuckDB file gets no code run by load_model; the pickle-free
copies predict exactly what the pickles do, and loading them unpickles nothing."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import joblib
import numpy as np
import pandas as pd
import pytest
import skops.io as skops_io
from dagster import instance_for_test
from sklearn.linear_model import LinearRegression
from sklearn.preprocessing import StandardScaler

from blofin_assets.ml.ensemble import ENSEMBLE_SPEC
from blofin_assets.ml.portable import (
    SKOPS_MODEL,
    SKOPS_SCALER,
    TRUSTED_TYPES,
    XGBOOST_MODEL,
    UntrustedTypesError,
    load_pickle_free,
    skops_bytes,
    trusted_types,
)
from blofin_assets.ml.publish import train_and_publish
from blofin_assets.ml.result_rows import unrecorded_rows
from blofin_assets.ml.specs import MODEL_SPECS, SPECS_BY_NAME
from blofin_assets.ml.store import ModelStore, sha256_file
from blofin_assets.ml.training import training_columns
from blofin_assets.serving import ModelIntegrityError, load_model
from blofin_assets.serving.integrity import served_record_problems
from blofin_assets.storage.candles import newest_candle_ts
from blofin_assets.storage.connection import DuckDBFile, DuckDBLockedError
from blofin_assets.storage.model_hashes import record_file_hashes
from blofin_assets.storage.results import append_results, migrate_results, recorded_versions
from blofin_assets.storage.training_rows import read_training_frame
from blofin_assets_tests.conftest import FROZEN_NOW, Project

MODEL_NAMES = [spec.name for spec in MODEL_SPECS]
RECORDED_NAMES = [*MODEL_NAMES, ENSEMBLE_SPEC.name]  # a whole run records the ensemble too
HASH_COLUMNS = [
    "model_sha256", "scaler_sha256", "config_sha256", "pickle_free_model_file",
    "pickle_free_model_sha256", "pickle_free_scaler_sha256", "hashes_source",
]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    """One materialization of everything on the demo market (as conftest's project fixture
    sets it up), shared: each test tampers with its own copy of the models directory."""
    root = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as monkeypatch, instance_for_test() as instance:
        for name in ("BLOFIN_SOURCE", "BLOFIN_CANDLES_FILE", "BLOFIN_API_URL", "BLOFIN_BAR"):
            monkeypatch.delenv(name, raising=False)
        project = Project(root, root / "data" / "blofin.duckdb", root / "models", monkeypatch)
        project.set_env(
            BLOFIN_DUCKDB_PATH=str(project.db_path),
            BLOFIN_MODELS_DIR=str(project.models_dir),
            BLOFIN_AS_OF=FROZEN_NOW,
            BLOFIN_LOOKBACK_DAYS="3",
            BLOFIN_TRAINING_DAYS="3",
            BLOFIN_INSTRUMENTS="BTC-USDT,ETH-USDT,SOL-USDT",
        )
        assert project.run(instance).success
        yield project


class Marker:
    """A crafted pickle: unpickling it creates ``path`` (any code could run instead)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return open, (str(self.path), "w")


def crafted_pickle(marker: Path) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(Marker(marker), buffer)
    return buffer.getvalue()


def copy_models(project: Project, tmp_path: Path) -> ModelStore:
    return ModelStore(shutil.copytree(project.models_dir, tmp_path / "models", symlinks=True))


def tamper(directory: Path, payload: bytes, *, version: str | None = None) -> str:
    """Replace model.pkl and write its hash into metadata.json too, as an attacker with write
    access to the folder can; returns the crafted file's sha256."""
    (directory / "model.pkl").write_bytes(payload)
    metadata = json.loads((directory / "metadata.json").read_text())
    digest = hashlib.sha256(payload).hexdigest()
    metadata["sha256"]["model.pkl"] = digest
    metadata["version"] = version or metadata["version"]
    (directory / "metadata.json").write_text(json.dumps(metadata))
    return digest


def plant(store: ModelStore, name: str, payload: bytes, version: str) -> None:
    """A whole new version folder, consistent in itself, served by re-pointing the link."""
    shutil.copytree(store.served_dir(name), store.version_dir(name, version))
    tamper(store.version_dir(name, version), payload, version=version)
    store.promote(name, version)


def test_crafted_pickle_whose_hash_is_also_in_metadata_is_refused_before_it_runs(
    trained: Project, tmp_path: Path
) -> None:
    control = tmp_path / "control-marker"
    joblib.load(io.BytesIO(crafted_pickle(control)))
    assert control.exists()  # the payload is real: unpickling it does run code

    store = copy_models(trained, tmp_path)
    name, marker = "risk_scorer", tmp_path / "marker"
    crafted = tamper(store.served_dir(name), crafted_pickle(marker))
    (recorded,) = trained.query(
        f"SELECT model_sha256 FROM ml_model_results WHERE version = '{store.served_version(name)}'"
    )[0]
    with pytest.raises(ModelIntegrityError) as refused:
        load_model(name, store.root, duckdb_path=trained.db_path)
    assert not marker.exists()
    message = str(refused.value)
    assert crafted in message and recorded in message and "model.pkl" in message
    # What served_files_intact compares with (metadata.json) agrees with the crafted file;
    # the database's record does not.
    assert store.verify_served(name) == []
    (problem,) = served_record_problems(store, name, trained.db_path)
    assert crafted in problem and recorded in problem

    # The documented opt-out checks metadata.json only, which the attacker rewrote too.
    load_model(name, store.root, verify_with="metadata")
    assert marker.exists()


def test_a_version_nothing_outside_its_folder_vouches_for_is_refused(
    trained: Project, tmp_path: Path
) -> None:
    store = copy_models(trained, tmp_path)
    marker = tmp_path / "marker"
    plant(store, "momentum_classifier", crafted_pickle(marker), "29990101T000000Z-planted")
    with pytest.raises(ModelIntegrityError, match="records no hashes for it") as refused:
        load_model("momentum_classifier", store.root, duckdb_path=trained.db_path)
    assert "verify_with='metadata'" in str(refused.value)
    missing = tmp_path / "no.duckdb"
    with pytest.raises(ModelIntegrityError, match=f"DuckDB file {missing} does not exist"):
        load_model("direction_predictor", store.root, duckdb_path=missing)
    assert not marker.exists()


def test_once_training_records_hashes_a_planted_version_stays_refused(
    trained: Project, tmp_path: Path
) -> None:
    """The training step records the hashes itself; the results step, which records every
    version it finds on disk, cannot make a planted one loadable."""
    spec = SPECS_BY_NAME["risk_scorer"]
    with duckdb.connect(str(trained.db_path), read_only=True) as con:
        frame = read_training_frame(con, training_columns(spec))
        data_until = newest_candle_ts(con)
    database, store = DuckDBFile(str(tmp_path / "record.duckdb")), ModelStore(tmp_path / "m")
    published = train_and_publish(
        spec, frame, store=store, horizon=5, promoted_skills=[], run_id="r1",
        data_until=data_until, hash_record=database,
    )  # fmt: skip
    with database.connect(read_only=True) as con:
        ledger = dict(con.execute("SELECT file, sha256 FROM model_file_hashes").fetchall())
    assert ledger == {f: sha256_file(published.version_dir / f) for f in ledger}
    assert {"model.pkl", "scaler.pkl", "config.json", SKOPS_MODEL, SKOPS_SCALER} <= set(ledger)
    # Just trained, not yet in ml_model_results: the training step's record vouches for it.
    assert load_model(spec.name, store.root, duckdb_path=database.path).version == published.version

    marker = tmp_path / "marker"
    plant(store, spec.name, crafted_pickle(marker), "29990101T000000Z-planted")
    with database.connect() as con:
        append_results(con, unrecorded_rows(store, [spec.name], recorded_versions(con)))
        sources = dict(
            con.execute("SELECT version, hashes_source FROM ml_model_results").fetchall()
        )
    assert sources == {published.version: "training", "29990101T000000Z-planted": "metadata.json"}
    with pytest.raises(ModelIntegrityError, match="training step recorded no hashes"):
        load_model(spec.name, store.root, duckdb_path=database.path)
    assert not marker.exists()


def feature_rows(project: Project) -> pd.DataFrame:
    with duckdb.connect(str(project.db_path), read_only=True) as con:
        return con.execute("SELECT * FROM features ORDER BY ts, inst_id LIMIT 2000").df()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_the_pickle_free_copy_predicts_exactly_what_the_pickle_does(
    trained: Project, name: str
) -> None:
    rows = feature_rows(trained)
    pickled = load_model(name, trained.models_dir)
    free = load_model(name, trained.models_dir, format="pickle-free")
    assert type(free.estimator) is type(pickled.estimator) and free.version == pickled.version
    for model in (pickled, free):  # a forest sums its trees' votes in whichever order its
        if "n_jobs" in model.estimator.get_params():  # threads finish: last bits vary per call
            model.estimator.set_params(n_jobs=1)
    expected, actual = pickled.predict(rows), free.predict(rows)
    assert list(actual.columns) == list(expected.columns)
    for column in expected.columns:
        assert np.array_equal(actual[column].to_numpy(), expected[column].to_numpy()), column
    model_file = XGBOOST_MODEL if name == "direction_predictor" else SKOPS_MODEL
    directory = ModelStore(trained.models_dir).served_dir(name)
    recorded = trained.query(
        "SELECT pickle_free_model_file, pickle_free_model_sha256, pickle_free_scaler_sha256 "
        f"FROM ml_model_results WHERE version = '{directory.name}'"
    )[0]
    assert recorded == (
        model_file,
        sha256_file(directory / model_file),
        sha256_file(directory / SKOPS_SCALER),
    )


def test_a_pickle_free_load_unpickles_nothing(trained: Project) -> None:
    """Every unpickler resolving a class raises the 'pickle.find_class' audit event (the C
    and Python ones alike): none may fire while the pickle-free copies load."""
    resolved: list[str] = []
    listening = [False]

    def hook(event: str, args: tuple) -> None:
        if event == "pickle.find_class" and listening[0]:
            resolved.append(f"{args[0]}.{args[1]}")

    sys.addaudithook(hook)
    for name in MODEL_NAMES:
        listening[0] = True
        load_model(name, trained.models_dir, format="pickle-free")
        listening[0] = False
        assert resolved == [], name
    listening[0] = True
    load_model("momentum_classifier", trained.models_dir)  # the control: a pickle load
    listening[0] = False
    assert any(found.startswith("sklearn.") for found in resolved)


def test_the_trusted_types_are_explicit_and_exactly_what_each_file_needs(
    trained: Project,
) -> None:
    assert all(
        isinstance(types, tuple) and all(isinstance(t, str) and "." in t for t in types)
        for types in TRUSTED_TYPES.values()
    )
    store = ModelStore(trained.models_dir)
    for spec in MODEL_SPECS:
        directory = store.served_dir(spec.name)
        assert skops_io.get_untrusted_types(file=directory / SKOPS_SCALER) == []
        if spec.model_type == "XGBClassifier":
            continue
        needed = skops_io.get_untrusted_types(file=directory / SKOPS_MODEL)
        assert sorted(needed) == sorted(trusted_types(spec.model_type)), spec.name
    # A file needing a type its estimator's list lacks is refused, at save and at load.
    forest = store.served_dir("momentum_classifier")
    estimator = joblib.load(forest / "model.pkl")
    with pytest.raises(UntrustedTypesError, match=r"sklearn\.tree\._tree\.Tree"):
        skops_bytes(estimator, "SVR", "the estimator")
    model_bytes, scaler_bytes = (
        (forest / SKOPS_MODEL).read_bytes(),
        (forest / SKOPS_SCALER).read_bytes(),
    )
    with pytest.raises(skops_io.exceptions.UntrustedTypesFoundException):
        load_pickle_free(SKOPS_MODEL, model_bytes, scaler_bytes, "SVR")


def test_a_results_table_from_before_the_hash_columns_is_backfilled_once(
    trained: Project, tmp_path: Path
) -> None:
    path = shutil.copy(trained.db_path, tmp_path / "old.duckdb")
    store = ModelStore(trained.models_dir)
    with duckdb.connect(str(path)) as con:
        for column in HASH_COLUMNS:
            con.execute(f"ALTER TABLE ml_model_results DROP COLUMN {column}")
        before = con.execute("SELECT count(*) FROM ml_model_results").fetchall()[0][0]
        migrate_results(con)
        assert recorded_versions(con) == set()  # every row is read once more, for its hashes
        assert (
            append_results(con, unrecorded_rows(store, RECORDED_NAMES, recorded_versions(con))) == 0
        )
        rows = con.execute("SELECT version, hashes_source, model_sha256 FROM ml_model_results")
        backfilled = rows.fetchall()
        assert len(backfilled) == before == len(recorded_versions(con))
    for version, source, digest in backfilled:
        assert source == "metadata.json, backfilled"
        name = next(n for n in RECORDED_NAMES if store.version_dir(n, version).is_dir())
        assert digest == sha256_file(store.version_dir(name, version) / "model.pkl")
    assert load_model("risk_scorer", store.root, duckdb_path=path).name == "risk_scorer"


def test_a_reader_waits_for_a_writer_and_then_names_the_lock(
    trained: Project, tmp_path: Path
) -> None:
    path = shutil.copy(trained.db_path, tmp_path / "locked.duckdb")
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb, sys; c = duckdb.connect({str(path)!r}); "
         "print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DuckDBLockedError, match=str(path)):
            load_model("risk_scorer", trained.models_dir, duckdb_path=path, lock_wait_seconds=1)
    finally:
        holder.communicate("")
    assert load_model("risk_scorer", trained.models_dir, duckdb_path=path).name == "risk_scorer"


def test_the_record_is_made_before_the_version_is_visible(tmp_path: Path) -> None:
    x = np.arange(20.0).reshape(10, 2)
    scaler = StandardScaler().fit(x)
    store, seen = ModelStore(tmp_path), {}

    def record(hashes: dict[str, str]) -> None:
        assert not store.version_dir("demo", "v1").exists()
        seen.update(hashes)

    directory = store.save_version(
        "demo", "v1", estimator=LinearRegression().fit(x, x[:, 0]), scaler=scaler,
        config={"features": ["a", "b"]}, metadata={"model_name": "demo"}, record_hashes=record,
    )  # fmt: skip
    assert seen == {f: sha256_file(directory / f) for f in seen}
    assert set(seen) == {"model.pkl", "scaler.pkl", "config.json", SKOPS_MODEL, SKOPS_SCALER}

    def refuse(hashes: dict[str, str]) -> None:
        raise RuntimeError("database unreachable")

    with pytest.raises(RuntimeError, match="unreachable"):
        store.save_version(
            "demo", "v2", estimator=LinearRegression().fit(x, x[:, 0]), scaler=scaler,
            config={}, metadata={}, record_hashes=refuse,
        )  # fmt: skip
    assert store.version_names("demo") == ["v1"]  # no record, no version
    with duckdb.connect(str(tmp_path / "h.duckdb")) as con:
        record_file_hashes(con, "demo", "v1", seen)
        record_file_hashes(con, "demo", "v1", seen)  # the same record again: a no-op
        with pytest.raises(ValueError, match="already records demo v1 with other hashes"):
            record_file_hashes(con, "demo", "v1", {**seen, "model.pkl": "0" * 64})
