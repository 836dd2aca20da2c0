"""The report's charts, drawn with matplotlib's Agg backend into PNG bytes (no display, no network).

One look for every chart (quiet axes, light grid, one colour per persona throughout the report), so a
reader who learned a persona's colour in one chart can find it in the next.
"""

from __future__ import annotations

import calendar
import datetime as dt
import io
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: never try to open a window

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter
from numpy.typing import NDArray

# Colour-blind-friendly (Okabe-Ito) first, then tab10 for larger catalogs.
_PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442", "#000000")
# Models get their own colours, so a model is never mistaken for the persona of the same colour.
_MODEL_PALETTE = ("#264653", "#2A9D8F", "#8AB17D", "#E9C46A", "#F4A261", "#E76F51", "#6D597A", "#B5838D")
NEUTRAL = "#7f7f7f"
_DPI = 110
MAX_DOTS = 5_000
# Typed Any: matplotlib types rc keys as a Literal union that a plain dict literal does not match.
_STYLE: Any = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.grid.axis": "y",
    "grid.color": "#e5e5e5",
    "axes.edgecolor": "#888888",
    "legend.frameon": False,
    "figure.dpi": _DPI,
    "savefig.dpi": _DPI,
}


def series_colors(n: int) -> list[str]:
    """n distinct colours; the i-th persona gets the i-th colour in every chart."""
    tab10 = [matplotlib.colors.to_hex(c) for c in plt.get_cmap("tab10").colors]  # type: ignore[attr-defined]
    return [(_PALETTE[i] if i < len(_PALETTE) else tab10[i % len(tab10)]) for i in range(n)]


def model_colors(n: int) -> list[str]:
    """n colours for models, distinct from the persona colours."""
    return [_MODEL_PALETTE[i % len(_MODEL_PALETTE)] for i in range(n)]


def wrap_label(text: str, width: int = 12) -> str:
    """Break a long tick label onto lines at spaces, so neighbouring labels do not run into each other."""
    return textwrap.fill(text, width=width, break_long_words=False) if len(text) > width else text


def month_labels(months: Sequence[str]) -> list[str]:
    """Tick labels for "YYYY-MM" months ("Jan" and "Jan 2026" on two lines): the year is shown only on
    the first month and on each January, so a year of monthly ticks fits without overlapping."""
    labels = []
    for i, month in enumerate(months):
        moment = dt.datetime.strptime(month, "%Y-%m")
        labels.append(moment.strftime("%b\n%Y") if i == 0 or moment.month == 1 else moment.strftime("%b"))
    return labels


def _figure(
    width: float, height: float, ncols: int = 1, nrows: int = 1
) -> tuple[Figure, NDArray[np.object_]]:
    with plt.rc_context(_STYLE):
        fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False)
    return fig, axes


def to_png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    with plt.rc_context(_STYLE):
        fig.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def percent_tick(value: float, _position: int | None = None) -> str:
    """A share as a percent with the decimals it needs: 5%, 2.5%, 0.25%, never 2.5% shown as "2%"."""
    percent = value * 100
    for decimals in range(3):
        if abs(percent - round(percent, decimals)) < 1e-9:
            return f"{percent:.{decimals}f}%"
    return f"{percent:.2f}%"


def percent_axis(ax: Axes, axis: str = "y") -> None:
    """Label an axis of shares as percents (``percent_tick``), so ticks at 2.5% steps read 2.5%, 5%."""
    (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter(FuncFormatter(percent_tick))


def grouped_bars(
    categories: Sequence[str],
    series: Mapping[str, Sequence[float]],
    *,
    title: str,
    ylabel: str,
    percent: bool = False,
    colors: Sequence[str] | None = None,
    label_bars: bool = False,
    color_by_category: bool = False,
) -> bytes:
    """Bars per category, one bar per series side by side (e.g. NDCG per dominant persona per model).

    With ``color_by_category`` the categories are personas and keep their colours; the series are then
    told apart by shade (solid, light, hatched) with a grey legend.
    """
    with plt.rc_context(_STYLE):
        fig, axes = _figure(max(6.0, 1.2 * len(categories) + 2.5), 3.6)
        ax = axes[0, 0]
        n = len(series)
        width = 0.8 / max(n, 1)
        x = np.arange(len(categories))
        palette = list(colors) if colors is not None else series_colors(n)
        category_colors = series_colors(len(categories))
        shades = ((1.0, ""), (0.45, ""), (0.45, "///"), (1.0, "///"))
        for i, (label, values) in enumerate(series.items()):
            heights = np.asarray(values, dtype=float)
            offset = x + (i - (n - 1) / 2) * width
            if color_by_category:
                alpha, hatch = shades[i % len(shades)]
                bars = ax.bar(
                    offset,
                    heights,
                    width * 0.92,
                    color=category_colors,
                    alpha=alpha,
                    hatch=hatch,
                    edgecolor="white",
                )
                ax.bar(0, 0, 0, color=NEUTRAL, alpha=alpha, hatch=hatch, label=label, edgecolor="white")
            else:
                bars = ax.bar(offset, heights, width * 0.92, label=label, color=palette[i])
            if label_bars:
                ax.bar_label(
                    bars,
                    labels=[f"{v:.0%}" if percent else f"{v:.3f}" for v in heights],
                    fontsize=8,
                    padding=2,
                )
        labels = [wrap_label(c) for c in categories]
        ax.set_xticks(x, labels)
        ax.set_ylabel(ylabel)
        ax.set_title(title, loc="left")
        if percent:
            percent_axis(ax)
        if n > 1:
            lines = max(label.count("\n") + 1 for label in labels) if labels else 1
            ax.legend(ncols=min(n, 5), loc="upper center", bbox_to_anchor=(0.5, -0.05 - 0.065 * lines))
        ax.margins(y=0.12)
    return to_png(fig)


def histograms(
    panels: Sequence[tuple[str, NDArray[np.float64], str]], *, bins: int = 20, percent_x: bool = False
) -> bytes:
    """Side-by-side histograms (title, values, x label), y axis as the share of customers."""
    with plt.rc_context(_STYLE):
        fig, axes = _figure(4.2 * len(panels), 3.2, ncols=len(panels))
        for ax, (title, values, xlabel) in zip(axes[0], panels, strict=True):
            weights = np.full(len(values), 1.0 / max(len(values), 1))
            ax.hist(
                values, bins=bins, range=(0.0, 1.0), weights=weights, color=_PALETTE[0], edgecolor="white"
            )
            ax.set_title(title, loc="left")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("share of customers")
            percent_axis(ax)
            if percent_x:
                percent_axis(ax, "x")
        fig.tight_layout()
    return to_png(fig)


def monthly_mix_lines(
    months: Sequence[str],
    inferred: NDArray[np.float64],
    names: Sequence[str],
    *,
    planted: NDArray[np.float64] | None = None,
    test_start: dt.date | None = None,
) -> bytes:
    """The population's mean persona weight per month, one line per persona (planted dashed, if known)."""
    with plt.rc_context(_STYLE):
        fig, axes = _figure(8.5, 3.8)
        ax = axes[0, 0]
        x = np.arange(len(months))
        for k, (name, color) in enumerate(zip(names, series_colors(len(names)), strict=True)):
            ax.plot(x, inferred[:, k], marker="o", color=color, label=name, linewidth=2)
            if planted is not None:
                ax.plot(x, planted[:, k], linestyle="--", color=color, linewidth=1.2, alpha=0.9)
        start_month = test_start.strftime("%Y-%m") if test_start is not None else None
        if test_start is not None and start_month in months:
            # Each month's point sits at its middle: the month spans position - 0.5 .. position + 0.5.
            days = calendar.monthrange(test_start.year, test_start.month)[1]
            position = months.index(start_month) - 0.5 + (test_start.day - 1) / days
            ax.axvline(position, color=NEUTRAL, linestyle=":", linewidth=1)
            ax.annotate(
                "held-out period \u2192",
                (position + 0.05, 0.03),
                xycoords=("data", "axes fraction"),
                color=NEUTRAL,
                fontsize=8,
                va="bottom",
            )
        ax.set_xticks(x, month_labels(months))
        ax.set_ylabel("mean persona weight")
        percent_axis(ax)
        title = "Mean persona mix of the customers active each month"
        if planted is not None:
            title += " (dashed: planted)"
        ax.set_title(title, loc="left")
        ax.legend(ncols=min(len(names), 5), loc="upper center", bbox_to_anchor=(0.5, -0.1))
        shown = inferred if planted is None else np.concatenate([inferred, planted])
        low, high = float(np.nanmin(shown)), float(np.nanmax(shown))
        # Zoomed to the data, but never to less than a 10-point span: sampling wiggles of a few tenths
        # of a point must not look like trends.
        middle, half = (low + high) / 2, max((high - low) / 2 + 0.02, 0.05)
        ax.set_ylim(max(0.0, middle - half), min(1.0, middle + half))
    return to_png(fig)


def concentration_curves(
    curves: Mapping[str, tuple[NDArray[np.float64], NDArray[np.float64]]], *, reference: str
) -> bytes:
    """Cumulative share of recommendations (or interactions) falling on the most popular items.

    x is the share of the catalog, most popular first; a curve that rises steeply and flattens early
    means a few hit items take most of the slots. ``reference`` (the interactions) is drawn in grey.
    """
    with plt.rc_context(_STYLE):
        fig, axes = _figure(7.5, 4.0)
        ax = axes[0, 0]
        colors = iter(model_colors(len(curves)))
        for label, (x, y) in curves.items():
            if label == reference:
                ax.plot(x, y, color="black", linewidth=2.5, linestyle="--", label=label)
            else:
                ax.plot(x, y, color=next(colors), linewidth=1.8, label=label)
        ax.plot([0, 1], [0, 1], color=NEUTRAL, linewidth=0.8, linestyle=":", label="every item equally")
        ax.set_xscale("symlog", linthresh=0.01)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.xaxis.set_major_formatter(
            FuncFormatter(lambda v, _: f"{v:.0%}" if v >= 0.01 or v == 0 else f"{v:.1%}")
        )
        ax.set_xticks([0, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0])
        percent_axis(ax)
        ax.grid(True, axis="both")
        ax.set_xlabel("most popular items, as a share of the catalog")
        ax.set_ylabel("cumulative share")
        ax.set_title("How concentrated recommendations are on popular items", loc="left")
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=9)
    return to_png(fig)


def calibration_grid(
    inferred: NDArray[np.float64], planted: NDArray[np.float64], names: Sequence[str], *, bins: int = 10
) -> bytes:
    """Per persona: planted weight against inferred weight (dots) and the binned mean (line).

    Points on the diagonal are customers whose weight was recovered exactly; a binned line below the
    diagonal means inference over-states that persona, above it under-states it.
    """
    k = len(names)
    ncols = min(k, 3)
    nrows = -(-k // ncols)
    with plt.rc_context(_STYLE):
        fig, axes = _figure(3.3 * ncols, 3.4 * nrows, ncols=ncols, nrows=nrows)
        for spare in axes.flat[k:]:
            spare.set_visible(False)
        edges = np.linspace(0.0, 1.0, bins + 1)
        # Dots for a sample (a million would be one smear and a slow PNG); binned means use everyone.
        dots = np.random.default_rng(0).permutation(len(inferred))[:MAX_DOTS]
        for j, (ax, name, color) in enumerate(zip(axes.flat[:k], names, series_colors(k), strict=True)):
            ax.scatter(inferred[dots, j], planted[dots, j], s=3, alpha=0.15, color=color, linewidths=0)
            which = np.clip(np.digitize(inferred[:, j], edges) - 1, 0, bins - 1)
            centres, means = [], []
            for b in range(bins):
                members = which == b
                if members.sum() >= 5:
                    centres.append(inferred[members, j].mean())
                    means.append(planted[members, j].mean())
            ax.plot(centres, means, color="black", linewidth=1.5, marker="o", markersize=3)
            ax.plot([0, 1], [0, 1], color=NEUTRAL, linewidth=0.8, linestyle=":")
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            ax.set_aspect("equal")
            ax.grid(True, axis="both")
            ax.set_title(name, loc="left", fontsize=10)
            ax.set_xlabel("inferred weight")
            if j % ncols == 0:
                ax.set_ylabel("planted weight")
            percent_axis(ax)
            percent_axis(ax, "x")
        fig.tight_layout()
    return to_png(fig)
