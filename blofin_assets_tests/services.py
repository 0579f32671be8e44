"""Real servers for the Celery + PostgreSQL test, each private to the test and on a free port:
a PostgreSQL cluster made by initdb in a temp folder, a redis-server, and Celery workers.

A private cluster rather than Debian's `main` one: nothing on the machine is configured or
left running, port 5432 may be taken, and the same code works as root (the cluster runs as
the `postgres` user Debian's package creates: PostgreSQL refuses to run as root) and as a
developer's own user. Every process here is started in its own session and ended by its
process group's id, so a worker's children go with it.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# Set to 1 on a developer machine without PostgreSQL or redis to skip the test instead of
# failing it; CI never sets it (.ci/run installs both).
SKIP_VARIABLE = "BLOFIN_SKIP_CELERY_TEST"
INSTALL_HINT = "apt-get install -y postgresql redis-server"


class ServiceMissing(RuntimeError):
    """A server binary the test needs is not installed."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def postgres_bin() -> Path:
    """The newest installed PostgreSQL's bin folder (Debian keeps it off PATH)."""
    found = shutil.which("initdb")
    candidates = [Path(found).resolve().parent] if found else []
    by_version = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(Path(path).parts[-3]) if Path(path).parts[-3].isdigit() else 0,
    )
    candidates += [Path(path).parent for path in reversed(by_version)]
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "postgres").is_file():
            return folder
    raise ServiceMissing(f"PostgreSQL's initdb and postgres are not installed: {INSTALL_HINT}")


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        raise ServiceMissing(f"redis-server is not installed: {INSTALL_HINT}")
    return found


def wait_for(ready, what: str, process: subprocess.Popen, log: Path, timeout: float) -> None:
    """Poll ``ready()`` until it is true; fail with the server's log if it died or never was."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"{what} exited with {process.returncode}:\n{log.read_text()[-3000:]}"
            )
        if ready():
            return
        time.sleep(0.2)
    raise RuntimeError(f"{what} not ready after {timeout:.0f}s:\n{log.read_text()[-3000:]}")


@contextmanager
def started(
    command: list[str], log: Path, stop_signal: int = signal.SIGTERM, **options
) -> Iterator[subprocess.Popen]:
    """A process in its own session, its output in ``log``; on exit its whole process group
    gets ``stop_signal`` (then SIGKILL after 20 s)."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **options
        )
    try:
        yield process
    finally:
        stop_group(process, stop_signal)


def stop_group(process: subprocess.Popen, first: int = signal.SIGTERM) -> None:
    try:
        os.killpg(process.pid, first)
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    except ProcessLookupError:
        pass


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str
    password: str
    database: str

    def env(self) -> dict[str, str]:
        """The variables deploy/celery/dagster.yaml reads."""
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USER": self.user,
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_DB": self.database,
        }


def _as_cluster_owner() -> dict:
    """Popen options: PostgreSQL will not run as root, so root runs it as `postgres`."""
    if os.geteuid() != 0:
        return {}
    try:
        import pwd

        owner = pwd.getpwnam("postgres")
    except KeyError as error:
        raise ServiceMissing(
            f"running as root and there is no 'postgres' user to run PostgreSQL: {INSTALL_HINT}"
        ) from error
    return {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}


@contextmanager
def postgres_server(database: str = "dagster") -> Iterator[Postgres]:
    """A fresh cluster on a free 127.0.0.1 port, password auth over TCP, one empty database."""
    import psycopg2

    binaries = postgres_bin()
    owner = _as_cluster_owner()
    root = Path(tempfile.mkdtemp(prefix="blofin-pg-"))
    try:
        if owner:
            os.chown(root, owner["user"], owner["group"])
        password = "blofin-test"
        (root / "pwfile").write_text(password + "\n")
        if owner:
            os.chown(root / "pwfile", owner["user"], owner["group"])
        data, log = root / "data", root / "postgres.log"
        initdb = [str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "-E", "UTF8",
                  "--auth-local=trust", "--auth-host=scram-sha-256",
                  f"--pwfile={root / 'pwfile'}", "--no-sync"]  # fmt: skip
        subprocess.run(initdb, check=True, capture_output=True, cwd=root, **owner)
        port = free_port()
        command = [str(binaries / "postgres"), "-D", str(data), "-p", str(port),
                   "-h", "127.0.0.1", "-k", str(root), "-c", "fsync=off",
                   "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]  # fmt: skip
        server = Postgres("127.0.0.1", port, "postgres", password, database)
        with started(command, log, cwd=root, stop_signal=signal.SIGINT, **owner) as process:

            def accepts() -> bool:
                try:
                    psycopg2.connect(
                        host=server.host, port=port, user="postgres", password=password,
                        dbname="postgres", connect_timeout=2,
                    ).close()  # fmt: skip
                except psycopg2.OperationalError:
                    return False
                return True

            wait_for(accepts, "postgres", process, log, timeout=60)
            admin = psycopg2.connect(
                host=server.host, port=port, user="postgres", password=password, dbname="postgres"
            )
            admin.autocommit = True
            with admin.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{database}"')
            admin.close()
            yield server
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def redis_server(folder: Path) -> Iterator[str]:
    """redis-server on a free 127.0.0.1 port, nothing persisted; yields its URL."""
    import redis

    port = free_port()
    log = folder / "redis.log"
    command = [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--daemonize", "no", "--dir", str(folder)]  # fmt: skip
    with started(command, log) as process:

        def pings() -> bool:
            try:
                return bool(redis.Redis(host="127.0.0.1", port=port, socket_timeout=1).ping())
            except redis.exceptions.ConnectionError:
                return False

        wait_for(pings, "redis-server", process, log, timeout=30)
        yield f"redis://127.0.0.1:{port}"


def celery_worker_command(bin_dir: Path, config: Path, name: str) -> list[str]:
    """One worker as docs/scaling.md starts it: one step at a time (``--concurrency=1``), so two
    of them stand for two machines."""
    return [str(bin_dir / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app",
            "-y", str(config), "-n", name, "-i", "blofin_assets.definitions",
            "--", "--concurrency=1"]  # fmt: skip


def wait_for_workers(broker: str, names: list[str], processes: list[subprocess.Popen],
                     logs: list[Path], timeout: float = 90) -> None:  # fmt: skip
    """Until every named worker answers a ping through the broker."""
    from celery import Celery

    app = Celery(broker=broker)
    deadline = time.monotonic() + timeout
    answered: set[str] = set()
    while time.monotonic() < deadline:
        for process, log in zip(processes, logs, strict=True):
            if process.poll() is not None:
                raise RuntimeError(f"a Celery worker exited:\n{log.read_text()[-3000:]}")
        replies = app.control.ping(timeout=1.0) or []
        answered = {name.split("@")[0] for reply in replies for name in reply}
        if set(names) <= answered:
            return
    tails = "\n".join(log.read_text()[-2000:] for log in logs)
    raise RuntimeError(f"Celery workers {sorted(set(names) - answered)} never answered:\n{tails}")
