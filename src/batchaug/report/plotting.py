"""Saving a report figure, and what it shows, read back from the matplotlib figure itself.

:func:`save_figure` writes the PNG and returns a :class:`FigureInfo`: the figure's title, each panel's
title and axis labels, and the series its legends name (for image panels, the panels). ``report``
writes them to ``plots/figures.json`` beside the PNGs, so a test, or a reader, can check what a figure
holds without decoding pixels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["FigureInfo", "label_points", "pyplot", "save_figure"]


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the file-only Agg backend (imported on first use: matplotlib is heavy)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def label_points(ax: Any, points: list[tuple[str, float, float]]) -> None:
    """Write each ``(text, x, y)`` beside its point. When some points lie within a label's size of one
    another on the drawn axes (the α modes of a split-BN run whose branches have not diverged), all labels
    go into a column beside the points, each joined to its point by a thin line, instead of over one
    another. Call it after everything else is plotted (it reads the axes' final scaling)."""
    ax.autoscale_view()
    pixels = [ax.transData.transform((x, y)) for _, x, y in points]
    to_axes = ax.transAxes.inverted()
    crowded = any(abs(a[0] - b[0]) < 45 and abs(a[1] - b[1]) < 12
                  for i, a in enumerate(pixels) for b in pixels[i + 1:])
    for k, (text, x, y) in enumerate(points):
        if not crowded:
            ax.annotate(text, (x, y), fontsize=7, xytext=(4, 3), textcoords="offset points")
            continue
        # a column in axes fractions, right of the rightmost point, from level with the highest one down
        fx = max(to_axes.transform(p)[0] for p in pixels) + 0.08
        fy = min(max(to_axes.transform(p)[1] for p in pixels), 0.9) - 0.055 * k
        ax.annotate(text, (x, y), fontsize=7, xytext=(min(fx, 0.85), max(fy, 0.03)), textcoords="axes fraction",
                    va="center", arrowprops={"arrowstyle": "-", "linewidth": 0.5, "color": "grey"})


@dataclass
class FigureInfo:
    """What one written figure shows."""

    file: str
    """The PNG's name inside ``plots/``."""
    title: str
    panels: list[dict[str, Any]] = field(default_factory=list)
    """Per panel: ``title``, ``xlabel``, ``ylabel``, ``yscale`` (``linear``/``log``), ``series`` (its legend's
    labels), ``data`` (the x and y values drawn for each series, as plotted: percent where the axis says %)
    and ``images``."""
    series: list[str] = field(default_factory=list)
    """Every series the figure names, in order, without repeats."""
    caption: str = ""
    """One sentence for report.md: what is drawn, and from which runs."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _values(seq: Any) -> list[float | str]:
    return [v if isinstance(v, str) else float(v) for v in seq]


def _series_data(handle: Any) -> dict[str, list] | None:
    """The x and y values behind a legend entry: a line, an errorbar's data line, or bars."""
    from matplotlib.container import BarContainer, ErrorbarContainer
    from matplotlib.lines import Line2D

    if isinstance(handle, ErrorbarContainer):
        handle = handle.lines[0]
    if isinstance(handle, Line2D):
        return {"x": _values(handle.get_xdata()), "y": _values(handle.get_ydata())}
    if isinstance(handle, BarContainer):
        return {"x": [p.get_x() + p.get_width() / 2 for p in handle.patches],
                "y": [float(p.get_height()) for p in handle.patches]}
    return None


def _panel(ax: Any) -> dict[str, Any] | None:
    if not ax.get_visible() or not ax.has_data() or ax.get_label() == "<colorbar>":
        return None  # an unused grid cell, or a colorbar (labelled, but no panel of its own)
    legend = ax.get_legend()
    series = [t.get_text() for t in legend.get_texts()] if legend is not None else []
    handles, labels = ax.get_legend_handles_labels()
    data = {label: d for h, label in zip(handles, labels, strict=True) if (d := _series_data(h)) is not None}
    return {"title": ax.get_title(), "xlabel": ax.get_xlabel(), "ylabel": ax.get_ylabel(), "yscale": ax.get_yscale(),
            "series": series, "data": data, "images": len(ax.get_images())}


def save_figure(fig: Any, path: str | Path, caption: str = "") -> FigureInfo:
    """Save ``fig`` as a PNG at ``path``, close it, and return what it shows."""
    plt = pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    panels = [p for ax in fig.axes if (p := _panel(ax)) is not None]
    series: list[str] = []
    for p in panels:
        names = p["series"] or ([p["title"]] if p["images"] else [])
        series += [s for s in names if s not in series]
    title = fig._suptitle.get_text() if getattr(fig, "_suptitle", None) is not None else ""
    title = title or next((p["title"] for p in panels if p["title"]), "")
    fig.savefig(path)
    plt.close(fig)
    return FigureInfo(path.name, title, panels, series, caption)
