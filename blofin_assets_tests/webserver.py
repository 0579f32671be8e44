"""`dg dev` (the README's command; `dagster dev` is superseded by it) as a subprocess for
end-to-end tests, and a small GraphQL client for it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

DG = str(Path(sys.executable).with_name("dg"))
# What Dagster prints when a command it has replaced is used (e.g. `dagster dev`).
SUPERSEDED = "SupersessionWarning"

WORKSPACE_QUERY = """
{
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError { __typename ... on PythonError { message } }
      }
    }
  }
}
"""


class GraphQLError(RuntimeError):
    """The server answered, but with GraphQL errors: the query itself is wrong."""


@dataclass
class DagsterDev:
    """A running `dg dev`: its URL, its process and the file its output goes to."""

    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def graphql(
        self, query: str, variables: dict[str, Any] | None = None, timeout: float = 60
    ) -> dict[str, Any]:
        """The `data` of one GraphQL request; GraphQL errors raise rather than hide in a dict."""
        response = requests.post(
            f"{self.url}/graphql",
            json={"query": query, "variables": variables or {}},
            timeout=timeout,
        )
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise GraphQLError(body["errors"])
        return body["data"]

    def log_tail(self, lines: int = 80) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def restore_default_signals() -> None:
    """Runs in the child before exec. A shell's background job ignores SIGINT, and dg dev (as
    dagster dev) maps SIGTERM onto SIGINT's handler, so it would then ignore our SIGTERM too."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def stop_process_group(process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """dg dev starts a webserver, a daemon, code servers and run workers in its group:
    ask them all to stop, then kill whatever is left so no test leaks processes."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, 0)  # anyone left in the group?
        except ProcessLookupError:
            return
        time.sleep(0.5)
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    process.wait(timeout=timeout)


def wait_until_loaded(server: DagsterDev, location: str, timeout: float) -> None:
    """Ready means the webserver answers and the code location has loaded without error."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"dg dev exited with {server.process.returncode}")
        try:
            data = server.graphql(WORKSPACE_QUERY, timeout=10)
        except (requests.RequestException, ValueError) as error:
            last = repr(error)
        else:
            entries = {e["name"]: e for e in data["workspaceOrError"].get("locationEntries", [])}
            entry = entries.get(location)
            last = repr(entry)
            if entry and entry["loadStatus"] == "LOADED":
                loaded = entry["locationOrLoadError"]
                if loaded["__typename"] == "PythonError":
                    raise RuntimeError(f"code location {location} failed: {loaded['message']}")
                return
        time.sleep(1)
    raise TimeoutError(f"{location} not loaded after {timeout:.0f}s; last: {last}")


@contextmanager
def dagster_dev(
    cwd: Path, env: dict[str, str], log_path: Path, location: str, timeout: float = 120
) -> Iterator[DagsterDev]:
    """Start `dg dev` in the project at ``cwd`` on a free port and wait for `location` (and
    that nothing it ran is superseded); always stop its whole process group, and print the
    log tail when the body fails (the run logs are in it)."""
    port = free_port()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [DG, "dev", "-h", "127.0.0.1", "-p", str(port)],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=restore_default_signals,
        )
    server = DagsterDev(port, process, log_path)
    try:
        wait_until_loaded(server, location, timeout)
        assert SUPERSEDED not in log_path.read_text(errors="replace"), server.log_tail()
        yield server
    except BaseException:
        print(f"--- dg dev log tail ({log_path}) ---\n{server.log_tail()}")
        raise
    finally:
        stop_process_group(process)
