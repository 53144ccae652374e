"""The demo's PNG: requests per second over time, one panel per run.

Promises: uses matplotlib's Agg canvas directly (no pyplot, no display, no global backend
change); writes exactly one PNG file at the path given, creating its parent directory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Panel:
    """One run: send times (seconds from the run start) of successful calls per instance, and of
    the 429 answers (drawn only when ``show_limited``)."""

    title: str
    ok_times: Mapping[str, Sequence[float]]
    limited_times: Sequence[float] = field(default_factory=tuple)
    show_limited: bool = False


def bin_width(duration: float) -> float:
    """Histogram bin (s): 1 s for runs of 8 s or more, else an eighth of the run."""
    return 1.0 if duration >= 8 else duration / 8


def rates(times: Sequence[float], duration: float, width: float) -> tuple[list[float], list[float]]:
    """Bin centres and requests/s per bin of ``width`` seconds over ``[0, duration)``; times
    outside the window are dropped."""
    n = max(1, round(duration / width))
    counts = [0] * n
    for t in times:
        i = int(t // width)
        if 0 <= i < n:
            counts[i] += 1
    return [(i + 0.5) * width for i in range(n)], [c / width for c in counts]


def write_chart(path: Path, panels: Sequence[Panel], limit_rps: float, duration: float,
                title: str = "One provider account shared by several instances") -> Path:
    """Draw ``panels`` side by side (shared y axis) with a dashed line at ``limit_rps`` under
    ``title``; save a PNG at ``path`` and return it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    width = bin_width(duration)
    fig = Figure(figsize=(6.0 * len(panels), 5.2), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    fig.suptitle(f"{title}\nrequests per second, {width:g} s bins")
    for ax, panel in zip(axes, panels, strict=True):
        total: list[float] = []
        for name in sorted(panel.ok_times, key=_natural):
            times = panel.ok_times[name]
            total.extend(times)
            x, y = rates(times, duration, width)
            ax.plot(x, y, marker="o", markersize=3, linewidth=1.2, label=f"{name} ok")
        x, y = rates(total, duration, width)
        ax.plot(x, y, color="tab:purple", linewidth=4, alpha=0.45, label="all instances ok")
        if panel.show_limited:
            x, y = rates(panel.limited_times, duration, width)
            ax.plot(x, y, color="tab:red", linewidth=1.8, label="429 rate-limited")
        ax.axhline(limit_rps, color="black", linestyle="--", linewidth=1.3, zorder=5,
                   label=f"provider limit ({limit_rps:g}/s)")
        ax.set_title(panel.title)
        ax.set_xlabel("seconds since start")
        ax.set_xlim(0, duration)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3,
                  frameon=False)
    axes[0].set_ylabel("requests per second")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def _natural(name: str) -> tuple[str, int]:
    head, _, tail = name.rpartition("-")
    return (head, int(tail)) if tail.isdigit() else (name, 0)
