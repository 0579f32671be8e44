"""The equity curves of direction's trading rule, always-long and always-flat, as a PNG, so a
person can look instead of read. Drawn on a Figure with its own Agg canvas: no display, no
pyplot, and no process-wide backend switch (importing this module changes nothing)."""

from __future__ import annotations

import io
from collections.abc import Mapping

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from blofin_assets.forward.trading import StrategyResult

LABELS = {"rule": "rule (after fees)", "always_long": "always long", "always_flat": "flat"}


def equity_curves_png(panels: Mapping[str, Mapping[str, StrategyResult]]) -> bytes:
    """One panel per title (e.g. 'live, all'), each with every strategy's cumulative net return
    per unit of capital; a Figure of its own, so concurrent runs share no pyplot state."""
    figure = Figure(figsize=(9, 3.2 * max(len(panels), 1)), dpi=90)
    canvas = FigureCanvasAgg(figure)
    axes = figure.subplots(max(len(panels), 1), 1, squeeze=False)[:, 0]
    for axis, (title, results) in zip(axes, panels.items(), strict=False):
        for name, result in results.items():
            if len(result.equity):
                axis.plot(result.equity.index, result.equity.to_numpy(), label=LABELS[name])
        axis.axhline(0.0, color="grey", linewidth=0.5)
        axis.set_title(title)
        axis.set_ylabel("net return")
        axis.legend(loc="upper left", fontsize="small")
    if not panels:
        axes[0].set_title("no direction_predictor outcomes yet")
    figure.autofmt_xdate()
    figure.tight_layout()
    buffer = io.BytesIO()
    canvas.print_png(buffer)
    return buffer.getvalue()
