import json
import os
import socket
import subprocess
import sys
import threading

import joblib
import numpy as np
import pytest
from sklearn.linear_model import LinearRegression
from sklearn.preprocessing import StandardScaler

from blofin_assets.ml.store import ModelStore, sha256_file


def fitted() -> tuple[LinearRegression, StandardScaler]:
    x = np.arange(20.0).reshape(10, 2)
    scaler = StandardScaler().fit(x)
    return LinearRegression().fit(scaler.transform(x), x[:, 0] * 2), scaler


def save(store: ModelStore, version: str, **extra: object):
    model, scaler = fitted()
    return store.save_version(
        "demo",
        version,
        estimator=model,
        scaler=scaler,
        config={"features": ["a", "b"]},
        metadata={"model_name": "demo", **extra},
    )


def test_save_and_promote_serves_all_four_files_with_valid_hashes(tmp_path) -> None:
    store = ModelStore(tmp_path)
    save(store, "20250101T000000Z-aaaa")
    store.promote("demo", "20250101T000000Z-aaaa")
    served = tmp_path / "model_demo"
    for name in ("model.pkl", "scaler.pkl", "config.json", "metadata.json"):
        assert (served / name).is_file()
    metadata = json.loads((served / "metadata.json").read_text())
    assert metadata["version"] == "20250101T000000Z-aaaa"
    assert metadata["sha256"]["model.pkl"] == sha256_file(served / "model.pkl")
    model = joblib.load(served / "model.pkl")
    scaler = joblib.load(served / "scaler.pkl")
    assert model.predict(scaler.transform([[4.0, 5.0]]))[0] == pytest.approx(8.0)
    assert store.verify_served("demo") == []


def test_failed_write_leaves_no_version_and_keeps_serving_the_old_one(tmp_path) -> None:
    store = ModelStore(tmp_path)
    save(store, "v1")
    store.promote("demo", "v1")
    _, scaler = fitted()
    with pytest.raises(Exception):  # noqa: B017 - a lambda cannot be pickled: any pickling error
        store.save_version(
            "demo", "v2", estimator=lambda x: x, scaler=scaler, config={}, metadata={}
        )
    history = sorted(p.name for p in (tmp_path / "model_demo" / "history").iterdir())
    assert history == ["v1"]
    assert store.served_version("demo") == "v1"
    assert store.verify_served("demo") == []


def test_promotion_switches_versions_atomically_under_concurrent_reads(tmp_path) -> None:
    store = ModelStore(tmp_path)
    save(store, "v1", marker=1)
    save(store, "v2", marker=2)
    store.promote("demo", "v1")
    errors: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            directory = store.served_dir("demo")
            metadata = json.loads((directory / "metadata.json").read_text())
            if sha256_file(directory / "model.pkl") != metadata["sha256"]["model.pkl"]:
                errors.append("mixed version")

    thread = threading.Thread(target=reader)
    thread.start()
    for _ in range(200):
        store.promote("demo", "v2")
        store.promote("demo", "v1")
    stop.set()
    thread.join()
    assert errors == []


def test_tampered_served_file_is_reported(tmp_path) -> None:
    store = ModelStore(tmp_path)
    save(store, "v1")
    store.promote("demo", "v1")
    with open(tmp_path / "model_demo" / "history" / "v1" / "model.pkl", "ab") as handle:
        handle.write(b"tampered")
    problems = store.verify_served("demo")
    assert len(problems) == 1 and "model.pkl" in problems[0] and "sha256" in problems[0]


def test_staging_of_a_dead_writer_is_cleaned_and_of_a_live_one_kept(tmp_path) -> None:
    store = ModelStore(tmp_path)
    save(store, "v1")
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()  # its pid now belongs to no process
    history = tmp_path / "model_demo" / "history"
    crashed = history / f".tmp-v2-{socket.gethostname()}-{finished.pid}-deadbeef"
    writing = history / f".tmp-v3-{socket.gethostname()}-{os.getpid()}-cafef00d"
    for staging in (crashed, writing):
        staging.mkdir()
        (staging / "model.pkl").write_bytes(b"half written")
    assert [m["version"] for m in store.versions("demo")] == ["v1"]
    assert store.clean_staging("demo") == [crashed]
    assert not crashed.exists()
    assert writing.exists()  # another run is still writing it


def test_existing_version_is_never_overwritten(tmp_path) -> None:
    store = ModelStore(tmp_path)
    save(store, "v1")
    with pytest.raises(FileExistsError):
        save(store, "v1")
    assert os.listdir(tmp_path / "model_demo" / "history") == ["v1"]


def test_a_served_file_without_a_recorded_hash_is_reported(tmp_path) -> None:
    store = ModelStore(tmp_path)
    save(store, "v1")
    store.promote("demo", "v1")
    metadata_path = tmp_path / "model_demo" / "history" / "v1" / "metadata.json"
    metadata = json.loads(metadata_path.read_text())
    del metadata["sha256"]["scaler.pkl"]
    metadata_path.write_text(json.dumps(metadata))
    problems = store.verify_served("demo")
    assert len(problems) == 1 and "records no sha256" in problems[0] and "scaler.pkl" in problems[0]


def test_only_a_promoted_version_newer_than_the_served_one_is_relabelled(tmp_path) -> None:
    from blofin_assets.ml.publish import mark_interrupted_promotions

    store = ModelStore(tmp_path)
    assert mark_interrupted_promotions(store, "demo") == []  # no model yet
    for day, status in ((1, "promoted"), (2, "promoted"), (3, "rejected"), (4, "promoted")):
        save(store, f"2025010{day}T000000Z-aaaa", status=status,
             trained_at=f"2025-01-0{day}T00:00:00+00:00")  # fmt: skip
    store.promote("demo", "20250101T000000Z-aaaa")
    store.promote("demo", "20250102T000000Z-aaaa")  # day 4: saved, never served
    before = store.read_metadata("demo", "20250104T000000Z-aaaa")

    assert mark_interrupted_promotions(store, "demo") == ["20250104T000000Z-aaaa"]
    statuses = {m["version"]: m["status"] for m in store.versions("demo")}
    assert statuses == {
        "20250101T000000Z-aaaa": "promoted",  # served once, superseded
        "20250102T000000Z-aaaa": "promoted",  # served
        "20250103T000000Z-aaaa": "rejected",
        "20250104T000000Z-aaaa": "interrupted",
    }
    relabelled = store.read_metadata("demo", "20250104T000000Z-aaaa")
    unchanged = {k: v for k, v in relabelled.items() if k not in ("status", "status_reason")}
    assert unchanged == {k: v for k, v in before.items() if k not in ("status", "status_reason")}
    assert mark_interrupted_promotions(store, "demo") == []  # idempotent
    # Versions older than the served one are never opened (a year of hourly history is long).
    (store.version_dir("demo", "20250101T000000Z-aaaa") / "metadata.json").write_text("{torn")
    assert mark_interrupted_promotions(store, "demo") == []
    assert store.verify_served("demo") == []
    assert not list((store.history_dir("demo") / "20250104T000000Z-aaaa").glob(".*"))


def test_a_first_promotion_cut_short_is_relabelled_too(tmp_path) -> None:
    from blofin_assets.ml.publish import mark_interrupted_promotions

    store = ModelStore(tmp_path)
    save(store, "20250101T000000Z-aaaa", status="promoted", trained_at="2025-01-01T00:00:00Z")
    assert mark_interrupted_promotions(store, "demo") == ["20250101T000000Z-aaaa"]
    assert (
        "no version stayed served"
        in store.read_metadata("demo", "20250101T000000Z-aaaa")["status_reason"]
    )
