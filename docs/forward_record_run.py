"""Make the README's "Does it work live?" figures and picture, from scratch, offline.

Three runs of the hourly job (every asset but the tuning ones) on the demo market (frozen
clocks an hour apart), then the walk-forward backtest with its defaults, then `dagster dev` and
Chromium on the forward_performance asset page. Prints the forward_performance rows it reads
back, and direction_predictor's trading rule after fees.

    .venv/bin/python docs/forward_record_run.py [--out docs/forward_record.png]

Needs Debian's chromium (as the UI test does). Everything lives in a temp folder.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
from playwright.sync_api import sync_playwright

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from blofin_assets_tests.webserver import dagster_dev  # noqa: E402

CLOCKS = ["2026-11-20T12:05:30Z", "2026-11-20T13:05:30Z", "2026-11-20T14:05:30Z"]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]  # fmt: skip


def environment(root: Path, as_of: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BLOFIN_", "DAGSTER_"))}
    env.update(
        DAGSTER_HOME=str(root / "home"),
        BLOFIN_DUCKDB_PATH=str(root / "blofin.duckdb"),
        BLOFIN_MODELS_DIR=str(root / "models"),
        BLOFIN_AS_OF=as_of,
    )
    return env


def dagster(root: Path, as_of: str, *args: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        [str(REPO / ".venv/bin/dagster"), *args, "-m", "blofin_assets.definitions"],
        env=environment(root, as_of),
        cwd=REPO,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def screenshot(url: str, out: Path) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        context = browser.new_context(viewport={"width": 1500, "height": 1300})
        context.add_init_script("window.localStorage.setItem('communityNux', '\"1\"');")
        page = context.new_page()
        page.goto(f"{url}/assets/forward_performance", timeout=60_000)
        page.get_by_text("direction_predictor_live_skill_24h").first.wait_for(timeout=90_000)
        page.wait_for_timeout(2_000)
        page.screenshot(path=str(out), full_page=False)
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "forward_record.png")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="forward_record_"))
    (root / "home").mkdir()
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", root / "home" / "dagster.yaml")
    for as_of in CLOCKS:  # the hourly job: everything but tuning (which adopts nothing here)
        seconds = dagster(root, as_of, "job", "execute", "-j", "hourly_training")
        print(f"hourly run as of {as_of}: {seconds:.1f} s")
    seconds = dagster(root, CLOCKS[-1], "job", "execute", "-j", "walk_forward_backtest")
    print(f"walk_forward_backtest (defaults): {seconds:.1f} s")
    # Recompute forward_performance so it includes the backtest outcomes too.
    dagster(root, CLOCKS[-1], "asset", "materialize", "--select", "forward_performance")
    with duckdb.connect(str(root / "blofin.duckdb"), read_only=True) as con:
        latest = con.execute(
            'SELECT mode, variant, "window", model_name, n, model_value, baseline_value, '
            "skill, p_value FROM forward_performance WHERE computed_at = "
            "(SELECT max(computed_at) FROM forward_performance) "
            'ORDER BY mode, variant, "window", model_name'
        ).df()
        trading = con.execute(
            'SELECT mode, "window", n, rule_gross_return, rule_net_return, rule_turnover, '
            "rule_fees, long_net_return, flat_net_return, log_loss, coin_flip_log_loss "
            "FROM forward_performance WHERE model_name = 'direction_predictor' AND computed_at "
            "= (SELECT max(computed_at) FROM forward_performance) AND \"window\" = 'all' "
            "ORDER BY mode"
        ).df()
        counts = con.execute(
            "SELECT mode, count(*) FROM prediction_outcomes GROUP BY mode ORDER BY mode"
        ).fetchall()
    print(f"prediction_outcomes: {counts}")
    print(latest.to_string())
    print("direction_predictor's rule after fees (returns as fractions):")
    print(trading.to_string())
    with dagster_dev(REPO, environment(root, CLOCKS[-1]), root / "dev.log", "blofin_assets") as (
        server
    ):
        screenshot(server.url, args.out)
    print(f"picture: {args.out}; run folder: {root}")


if __name__ == "__main__":
    main()
