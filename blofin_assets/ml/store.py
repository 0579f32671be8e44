"""Model files on disk: every version kept, one served, swapped atomically.

Layout under ``models/model_<name>/``::

    history/<version>/{model.pkl, scaler.pkl, config.json, metadata.json,
                       model.skops or model.ubj, scaler.skops}   (pickle-free: ml/portable.py)
    current -> history/<version>            (relative symlink, replaced atomically)
    model.pkl -> current/model.pkl           (and scaler.pkl, config.json, metadata.json)

A version directory is written under a temporary name and renamed into place, and serving
switches by replacing one symlink, so a crash at any instant leaves either the old or the new
version served, never a mix and never a half-written file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import joblib
import numpy as np

from blofin_assets.ml.portable import pickle_free_files

SERVED_FILES = ("model.pkl", "scaler.pkl", "config.json", "metadata.json")
HASHED_FILES = ("model.pkl", "scaler.pkl")
CURRENT_LINK = "current"
# Optional, hashed when present: the outlier reference (ml/reference.py), numpy arrays only.
# Versions saved before it have none.
REFERENCE_FILE = "reference.npz"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _HashingWriter:
    """A file that hashes what passes through it: the sha256 recorded is of the bytes this
    process wrote, not of a later read that another writer of the folder could have raced."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self.handle.write(data)

    def tell(self) -> int:  # joblib asks, to align numpy arrays
        return self.handle.tell()


def _write_bytes(path: Path, data: bytes) -> str:
    """Write and fsync ``data``; its sha256."""
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return hashlib.sha256(data).hexdigest()


def _dump_hashed(value: Any, path: Path) -> str:
    """joblib's pickle of ``value``, fsynced; the sha256 of the bytes as written."""
    with open(path, "wb") as handle:
        writer = _HashingWriter(handle)
        joblib.dump(value, writer)
        handle.flush()
        os.fsync(handle.fileno())
    return writer.digest.hexdigest()


def _write_json(path: Path, payload: dict[str, Any]) -> str:
    """Write and fsync the JSON; the sha256 of its bytes."""
    text = json.dumps(payload, indent=2, sort_keys=True, default=str)
    return _write_bytes(path, text.encode())


def _write_arrays(path: Path, arrays: Mapping[str, Any]) -> str:
    """An .npz of plain arrays (an object array would need pickle to load: refused); its
    sha256."""
    values = {name: np.asarray(value) for name, value in arrays.items()}
    objects = [name for name, value in values.items() if value.dtype.hasobject]
    if objects:
        raise ValueError(f"{path}: arrays {objects} hold Python objects (would need pickle)")
    with open(path, "wb") as handle:
        np.savez(handle, **values)
        handle.flush()
        os.fsync(handle.fileno())
    return sha256_file(path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def staging_abandoned(path: Path, max_age_seconds: float = 86_400.0) -> bool:
    """A staging directory whose writer died (same host, pid gone) or that is a day old."""
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return False
    parts = path.name.rsplit("-", 3)  # .tmp-<version>-<host>-<pid>-<random>
    if len(parts) == 4 and parts[2].isdigit() and parts[1] == socket.gethostname():
        return not process_alive(int(parts[2])) or age > max_age_seconds
    return age > max_age_seconds


def hash_problems(directory: Path, metadata: dict[str, Any]) -> list[str]:
    """Each pickled file must exist and match the sha256 recorded at training time; a file
    the metadata records no hash for is a problem too, never skipped."""
    expected = metadata.get("sha256") or {}
    problems = []
    for filename in HASHED_FILES:
        path = directory / filename
        if filename not in expected:
            problems.append(f"{directory / 'metadata.json'} records no sha256 for {path}")
        elif not path.is_file():
            problems.append(f"{path} is missing (expected sha256 {expected[filename]})")
        elif (actual := sha256_file(path)) != expected[filename]:
            problems.append(f"{path} has sha256 {actual}, expected {expected[filename]}")
    return problems


class ModelStore:
    """Reads and writes the model files contract; knows nothing about Dagster."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def model_dir(self, name: str) -> Path:
        return self.root / f"model_{name}"

    def history_dir(self, name: str) -> Path:
        return self.model_dir(name) / "history"

    def version_dir(self, name: str, version: str) -> Path:
        return self.history_dir(name) / version

    def save_version(
        self,
        name: str,
        version: str,
        *,
        estimator: Any,
        scaler: Any,
        config: dict[str, Any],
        metadata: dict[str, Any],
        reference: Mapping[str, Any] | None = None,
        record_hashes: Callable[[dict[str, str]], None] | None = None,
    ) -> Path:
        """Write a complete version directory, or nothing: temp directory, fsync, rename.
        ``reference`` (numpy arrays) becomes reference.npz, hashed like the pickles.
        ``record_hashes`` gets every file's sha256 before the folder becomes visible: a record
        kept outside the models directory, which whoever can rewrite the folder cannot."""
        history = self.history_dir(name)
        history.mkdir(parents=True, exist_ok=True)
        final = history / version
        if final.exists():
            raise FileExistsError(f"model version {name}/{version} already exists at {final}")
        # Host and pid in the name: clean_staging must never delete a write still in progress.
        staging = (
            history / f".tmp-{version}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        )
        staging.mkdir()
        try:
            hashes = {
                "model.pkl": _dump_hashed(estimator, staging / "model.pkl"),
                "scaler.pkl": _dump_hashed(scaler, staging / "scaler.pkl"),
            }
            if reference is not None:
                hashes[REFERENCE_FILE] = _write_arrays(staging / REFERENCE_FILE, reference)
            # The pickle-free copies (ml/portable.py) and config.json are hashed too.
            for filename, data in pickle_free_files(
                estimator, scaler, config.get("model_type")
            ).items():
                hashes[filename] = _write_bytes(staging / filename, data)
            hashes["config.json"] = _write_json(staging / "config.json", config)
            _write_json(
                staging / "metadata.json", {**metadata, "version": version, "sha256": hashes}
            )
            _fsync_dir(staging)
            if record_hashes is not None:  # a record outside this folder, before it is visible
                record_hashes(dict(hashes))
            os.rename(staging, final)
            _fsync_dir(history)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return final

    def promote(self, name: str, version: str) -> None:
        """Serve ``version``: one atomic symlink replacement switches all four files at once."""
        model_dir = self.model_dir(name)
        target = self.version_dir(name, version)
        if not (target / "metadata.json").is_file():
            raise FileNotFoundError(f"cannot serve {name}/{version}: {target} is not a version")
        self._replace_symlink(model_dir / CURRENT_LINK, Path("history") / version)
        for filename in SERVED_FILES:
            link = model_dir / filename
            wanted = Path(CURRENT_LINK) / filename
            if not (link.is_symlink() and Path(os.readlink(link)) == wanted):
                self._replace_symlink(link, wanted)
        _fsync_dir(model_dir)

    def rewrite_metadata(self, name: str, version: str, metadata: dict[str, Any]) -> None:
        """Replace one version's metadata.json whole: temp file, fsync, rename (never torn)."""
        directory = self.version_dir(name, version)
        temporary = directory / f".metadata.json.{uuid.uuid4().hex[:8]}"
        try:
            _write_json(temporary, metadata)
            os.replace(temporary, directory / "metadata.json")
        finally:
            temporary.unlink(missing_ok=True)
        _fsync_dir(directory)

    @staticmethod
    def _replace_symlink(link: Path, points_to: Path) -> None:
        temporary = link.with_name(f".{link.name}.{uuid.uuid4().hex[:8]}")
        os.symlink(points_to, temporary)
        os.replace(temporary, link)

    def served_version(self, name: str) -> str | None:
        link = self.model_dir(name) / CURRENT_LINK
        if not link.is_symlink():
            return None
        return Path(os.readlink(link)).name

    def served_dir(self, name: str) -> Path | None:
        """The served version's directory, resolved once so reads cannot straddle a swap."""
        version = self.served_version(name)
        return self.version_dir(name, version) if version else None

    def read_metadata(self, name: str, version: str) -> dict[str, Any]:
        with open(self.version_dir(name, version) / "metadata.json") as handle:
            return json.load(handle)

    def version_names(self, name: str) -> list[str]:
        """Every complete version, oldest first (names sort by time), without opening any file:
        hourly training keeps thousands of versions, so callers filter names before reading."""
        history = self.history_dir(name)
        if not history.is_dir():
            return []
        return sorted(
            path.name
            for path in history.iterdir()
            if not path.name.startswith(".") and (path / "metadata.json").is_file()
        )

    def versions(self, name: str) -> Iterator[dict[str, Any]]:
        """Metadata of every complete version on disk, oldest first."""
        for version in self.version_names(name):
            yield self.read_metadata(name, version)

    def verify_served(self, name: str) -> list[str]:
        """Problems with the served files (missing, unreadable, hash mismatch); empty if sound."""
        directory = self.served_dir(name)
        if directory is None:
            return [f"{self.model_dir(name)}: no served version ('{CURRENT_LINK}' link missing)"]
        problems = []
        for filename in SERVED_FILES:
            if not (self.model_dir(name) / filename).is_file():
                problems.append(f"{self.model_dir(name) / filename}: missing")
        try:
            metadata = self.read_metadata(name, directory.name)
        except (OSError, ValueError) as error:
            return [*problems, f"{directory / 'metadata.json'}: unreadable ({error})"]
        return problems + hash_problems(directory, metadata)

    def clean_staging(self, name: str) -> list[Path]:
        """Remove temp directories left by a crashed write (never visible as versions).

        Only those whose writer is gone: same host and a pid that no longer exists, or older
        than a day. Another run writing the same model at this moment keeps its directory.
        """
        history = self.history_dir(name)
        removed = []
        if history.is_dir():
            for path in history.glob(".tmp-*"):
                if staging_abandoned(path):
                    shutil.rmtree(path, ignore_errors=True)
                    removed.append(path)
        return removed
