"""Posting one JSON message, and the settings that say where to.

A post answers whether the message arrived; it never raises for the network, so a receiver
that is down costs a log line and a retry, never a failed tick or run.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

WEBHOOK_ENV = "BLOFIN_ALERT_WEBHOOK"
UI_URL_ENV = "BLOFIN_UI_URL"
INTERVAL_ENV = "BLOFIN_ALERT_INTERVAL_SECONDS"
DEFAULT_UI_URL = "http://127.0.0.1:3000"
DEFAULT_INTERVAL_SECONDS = 30  # Dagster's own default for a sensor
# Connect and read timeouts: a slow receiver must not hold a tick past Dagster's 60 s limit.
TIMEOUT = (3.0, 5.0)


@dataclass(frozen=True)
class AlertSettings:
    """Read at each tick: the webhook URL is a secret (Slack's and Discord's carry their token
    in it), so it stays in the environment, never in definitions, run config or logs."""

    webhook_url: str
    ui_url: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> AlertSettings:
        return cls(
            webhook_url=environ.get(WEBHOOK_ENV, "").strip(),
            ui_url=environ.get(UI_URL_ENV, "").strip() or DEFAULT_UI_URL,
        )


def interval_seconds(environ: Mapping[str, str]) -> int:
    """How often the sensors look, from BLOFIN_ALERT_INTERVAL_SECONDS (at least 1)."""
    raw = environ.get(INTERVAL_ENV, "").strip()
    if not raw:
        return DEFAULT_INTERVAL_SECONDS
    try:
        value = int(raw)
    except ValueError as error:
        raise ValueError(f"{INTERVAL_ENV}={raw!r} is not a whole number of seconds") from error
    if value < 1:
        raise ValueError(f"{INTERVAL_ENV}={raw!r} must be at least 1")
    return value


def redacted(url: str) -> str:
    """The receiver's scheme and host, for logs: the path may be the secret."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/…" if parts.netloc else "(not a URL)"


@dataclass(frozen=True)
class Delivery:
    delivered: bool
    detail: str


def post_json(
    url: str, body: Mapping[str, Any], timeout: tuple[float, float] = TIMEOUT
) -> Delivery:
    """Any 2xx answer is delivered. Anything else (refused, timed out, 5xx, and 4xx too: a
    wrong URL is fixed by a person, and the alert should still arrive then) is not."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return Delivery(False, f"{WEBHOOK_ENV} is not an http(s) URL: {redacted(url)}")
    try:
        data = json.dumps(dict(body), allow_nan=False).encode()
    except (TypeError, ValueError) as error:  # payload.json_safe prevents it; never raise
        return Delivery(False, f"the alert is not strict JSON: {error}")
    headers = {"Content-Type": "application/json"}
    try:
        response = requests.post(
            url, data=data, headers=headers, timeout=timeout, allow_redirects=False
        )
    except requests.Timeout:
        return Delivery(False, f"{redacted(url)} timed out after {timeout[0] + timeout[1]:g} s")
    except requests.RequestException as error:
        # Not str(error): it quotes the URL's path, which may be the secret.
        refused = "refused" if "Connection refused" in str(error) else type(error).__name__
        return Delivery(False, f"{redacted(url)} unreachable ({refused})")
    if 200 <= response.status_code < 300:
        return Delivery(True, f"HTTP {response.status_code}")
    answer = " ".join(response.text.split())[:200]
    return Delivery(False, f"{redacted(url)} answered HTTP {response.status_code}: {answer}")
