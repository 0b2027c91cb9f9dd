"""Axes the report's plots share: the load axis (log 2, ticked at the loads drawn) and
plain-number log axes, both labelling only the ticks whose labels can be read."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from amdfleet.campaign.report.data import fmt


def load_axis(ax: Any, xlabel: str) -> None:
    """A log-2 x axis ticked at the loads drawn (measured and seed), not at powers of 2;
    a load whose label would touch a rounder one's is ticked but not labelled."""
    from matplotlib.ticker import FixedLocator, NullLocator

    loads = sorted({float(x) for line in ax.get_lines() for x in line.get_xdata()})
    ax.margins(x=0.06, y=0.12)  # room for the seed and failure labels above points
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(loads))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(_readable_formatter(lambda v: fmt(float(v))))
    ax.set_xlabel(f"{xlabel} (log2 scale)")
    ax.grid(True, which="major", alpha=0.3)


def log_plain_axis(ax: Any, axis: str) -> None:
    """A log scale labelled with plain numbers (``200``, ``6``, ``0.5``), not ``2×10²``,
    and only as many as can be read: every tick is drawn, a label only where it keeps
    clear of the others (see :func:`readable_ticks`), so a range over a decade reads
    ``100 200 500 1000``, never ``300400500600700800``."""
    getattr(ax, f"set_{axis}scale")("log")
    target = ax.yaxis if axis == "y" else ax.xaxis
    formatter = _readable_formatter(lambda v: f"{v:g}")
    target.set_major_formatter(formatter)
    target.set_minor_formatter(formatter)


def readable_ticks(
    ticks: Iterable[float],
    pixel: Callable[[float], float],
    extent: Callable[[str], float],
    text: Callable[[float], str],
) -> set[float]:
    """The ticks to label so that no two labels touch. ``pixel`` places a tick along the
    axis and ``extent`` is a label's size along it, both in pixels. The roundest ticks
    go first (powers of ten, then leading digit 5, then 2, then the rest), each kept
    when its label clears every label kept so far."""
    kept: list[tuple[float, float]] = []  # (centre, half extent) of each label placed
    shown: set[float] = set()
    for value in sorted(set(ticks), key=_roundness):
        centre, half = pixel(value), extent(text(value)) / 2
        if all(abs(centre - c) >= half + h for c, h in kept):
            kept.append((centre, half))
            shown.add(value)
    return shown


def _readable_formatter(text: Callable[[float], str]) -> Any:
    """A tick formatter labelling only :func:`readable_ticks` of the ticks in view; one
    instance serves major and minor ticks, so minor labels keep clear of major ones."""
    from matplotlib.ticker import Formatter

    class Readable(Formatter):
        def __call__(self, x: float, pos: int | None = None) -> str:
            return text(x)

        def format_ticks(self, values: Sequence[float]) -> list[str]:
            axis: Any = self.axis
            low, high = sorted(axis.get_view_interval())
            ticks = [
                v
                for v in (*axis.get_majorticklocs(), *axis.get_minorticklocs())
                if low <= v <= high and v > 0
            ]
            shown = readable_ticks(ticks, _pixel(axis), _extent(axis), text)
            return [text(v) if v in shown else "" for v in values]

    return Readable()


def _pixel(axis: Any) -> Callable[[float], float]:
    """Where a value falls along ``axis``, in pixels from its low end."""
    scale = axis.get_transform()

    def scaled(value: float) -> float:
        return float(scale.transform([value]).ravel()[0])

    low, high = (scaled(v) for v in axis.get_view_interval())
    box = axis.axes.bbox
    length = box.width if axis.axis_name == "x" else box.height

    def place(value: float) -> float:
        return float((scaled(value) - low) / (high - low) * length)

    return place


def _extent(axis: Any) -> Callable[[str], float]:
    """A tick label's size along ``axis`` in pixels, with room between neighbours: its
    width on an x axis (digits are about 0.6 em wide), its line height on a y axis."""
    from matplotlib import rcParams
    from matplotlib.font_manager import FontProperties

    name = axis.axis_name
    size = rcParams["xtick.labelsize" if name == "x" else "ytick.labelsize"]
    em = FontProperties(size=size).get_size_in_points() * axis.figure.dpi / 72
    if name == "x":
        return lambda label: (0.62 * len(label) + 1.5) * em
    return lambda label: 1.6 * em


def _roundness(value: float) -> tuple[int, float]:
    """Sort key: powers of ten first, then leading digit 5, then 2, then the rest."""
    if value <= 0 or not math.isfinite(value):
        return (4, value)
    digits = f"{value:.6e}".split("e")[0].rstrip("0").rstrip(".")
    rank = {"1": 0, "5": 1, "2": 2}.get(digits, 3)
    return (rank, value)
