"""Figures of what ``batchaug eval`` wrote (``RUN/eval/<suite>.json``): corruption errors per corruption
and severity, the α trade-off of one run (clean accuracy against corruption error as the split-BN blend
moves), Fourier heatmaps side by side, low-pass curves, gradient norms against M.

Reads only the JSON files (``{"suite", "limit", "modes": {mode: result}}``, ``docs/evaluate.md``), never
the code that wrote them. :data:`PLOTTERS` maps a suite name to its drawing function; a suite without
one is listed in the report but not drawn.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from batchaug.report.plotting import FigureInfo, label_points, pyplot, save_figure

__all__ = ["PLOTTERS", "alpha_of", "load_eval_results", "plot_eval_results"]


def load_eval_results(run_dir: str | Path) -> dict[str, dict[str, Any]]:
    """``{file stem: payload}`` of every ``eval/*.json`` of a run that has the suite format."""
    out = {}
    for path in sorted((Path(run_dir) / "eval").glob("*.json")):
        try:
            payload = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # a file another tool wrote, or one being written: not ours to draw
        if isinstance(payload, dict) and isinstance(payload.get("modes"), dict) and "suite" in payload:
            out[path.stem] = payload
    return out


def alpha_of(mode: str) -> float | None:
    """The split-BN blend weight α of an evaluation mode: ``main`` 0, ``aux`` 1, ``alpha=<a>`` a."""
    if mode == "main":
        return 0.0
    if mode == "aux":
        return 1.0
    m = re.fullmatch(r"alpha=([0-9.]+)", mode)
    return float(m.group(1)) if m else None


def _limit(payload: dict[str, Any]) -> str:
    n = payload.get("limit")
    return f"{n} {payload.get('split', 'test')} images" if n else f"the whole {payload.get('split', 'test')} split"


def plot_corruptions(label: str, payload: dict[str, Any], out: Path) -> list[FigureInfo]:
    """Error per corruption (mean over severities) per mode, and error against severity."""
    plt = pyplot()
    modes = {m: r for m, r in payload["modes"].items() if r.get("error")}
    names = sorted({c for r in modes.values() for c in r["error"]})
    if not names:
        return []
    fig, (bars, lines) = plt.subplots(1, 2, figsize=(13, 4.8), dpi=110, gridspec_kw={"width_ratios": [2.2, 1]})
    width = 0.8 / max(len(modes), 1)
    for k, (mode, result) in enumerate(modes.items()):
        err = result["error"]
        means = [100 * sum(err[c].values()) / len(err[c]) if c in err else float("nan") for c in names]
        bars.bar([i + k * width for i in range(len(names))], means, width, label=mode)
        severities = sorted({s for c in err for s in err[c]}, key=int)
        per_severity = [100 * sum(err[c][s] for c in err if s in err[c]) / sum(1 for c in err if s in err[c])
                        for s in severities]
        uce = result.get("uCE")
        lines.plot([int(s) for s in severities], per_severity, marker="o",
                   label=mode + (f" (uCE {100 * uce:.1f}%)" if uce is not None else ""))
    bars.set_xticks([i + 0.4 - width / 2 for i in range(len(names))], names, rotation=70, fontsize=7)
    bars.set_xlabel("corruption")
    bars.set_ylabel("error (%), mean over severities")
    bars.set_title("per corruption", fontsize=9)
    lines.set_xlabel("severity (1-5)")
    lines.set_ylabel("error (%), mean over corruptions")
    lines.set_title("per severity", fontsize=9)
    # head room above the tallest bar for a one-row legend, so that it hides no bar
    bars.set_ylim(0, 1.22 * max((p.get_height() for p in bars.patches if p.get_height() == p.get_height()),
                                default=1.0))
    bars.legend(fontsize=7, title="mode", title_fontsize=7, loc="upper center", ncol=min(len(modes), 6))
    lines.legend(fontsize=7, title="mode", title_fontsize=7)
    for ax in (bars, lines):
        ax.grid(alpha=0.3)
    fig.suptitle(f"{label}: corruption error ({_limit(payload)})")
    fig.tight_layout()
    written = [save_figure(fig, out / f"{_stem(label)}_corruptions.png",
                           f"Corruption error of {label} per corruption and per severity, one bar / line per "
                           "evaluation mode.")]
    written += _alpha_tradeoff(label, payload, out)
    return written


def _alpha_tradeoff(label: str, payload: dict[str, Any], out: Path) -> list[FigureInfo]:
    """Split-BN Fig. 3 for one run: clean accuracy against uCE for the main/aux/alpha modes, in α order."""
    points = sorted((a, r) for m, r in payload["modes"].items() if (a := alpha_of(m)) is not None
                    and r.get("uCE") is not None and r.get("clean_error") is not None)
    if len(points) < 2:
        return []
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.2), dpi=110)
    ax.plot([100 * r["uCE"] for _, r in points], [100 * (1 - r["clean_error"]) for _, r in points], marker="o",
            label=f"{label}, α from 0 (main) to 1 (aux)")
    label_points(ax, [(f"α={a:g}", 100 * r["uCE"], 100 * (1 - r["clean_error"])) for a, r in points])
    ax.set_xlabel("uCE, mean corruption error (%)")
    ax.set_ylabel("clean accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"{label}: the α trade-off")
    fig.tight_layout()
    return [save_figure(fig, out / f"{_stem(label)}_alpha_tradeoff.png",
                        f"Clean accuracy against uCE of {label} as the blend α of main and auxiliary BN moves.")]


def plot_fourier(label: str, payload: dict[str, Any], out: Path) -> list[FigureInfo]:
    """The heatmaps of all modes side by side (lowest frequency at the centre, error 0 to 1)."""
    plt = pyplot()
    modes = payload["modes"]
    fig, axes = plt.subplots(1, len(modes), figsize=(3.4 * len(modes) + 1.0, 3.8), dpi=110, squeeze=False)
    image = None
    for ax, (mode, result) in zip(axes[0], modes.items(), strict=True):
        grid = result["grid"]
        half = len(grid) // 2
        image = ax.imshow(grid, cmap="jet", vmin=0.0, vmax=1.0, extent=(-half - 0.5, len(grid) - half - 0.5,
                                                                          len(grid) - half - 0.5, -half - 0.5))
        ax.set_title(f"{mode} (mean {100 * result['mean_error']:.1f}%)", fontsize=8)
        ax.set_xlabel("horizontal frequency (cycles/image)", fontsize=7)
        ax.set_ylabel("vertical frequency (cycles/image)", fontsize=7)
        ax.tick_params(labelsize=6)
    if image is not None:
        bar = fig.colorbar(image, ax=axes[0].tolist(), fraction=0.03)
        bar.set_label("error on the perturbed images (0-1)", fontsize=7)
    fig.suptitle(f"{label}: Fourier sensitivity, perturbation L2 norm {next(iter(modes.values()))['norm']:g} "
                 f"({_limit(payload)})", fontsize=9)
    return [save_figure(fig, out / f"{_stem(label)}_fourier.png",
                        f"Fourier heatmaps of {label}, one panel per mode: error when a Fourier basis image of "
                        "that frequency is added (centre: lowest frequency).")]


def plot_lowpass(label: str, payload: dict[str, Any], out: Path) -> list[FigureInfo]:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.2), dpi=110)
    for mode, result in payload["modes"].items():
        ax.plot(result["bandwidth"], [100 * a for a in result["accuracy"]], marker="o", markersize=3, label=mode)
    ax.set_xlabel("low-pass bandwidth (frequencies kept per axis)")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, title="mode", title_fontsize=7)
    ax.set_title(f"{label}: low-pass filtering ({_limit(payload)})")
    fig.tight_layout()
    return [save_figure(fig, out / f"{_stem(label)}_lowpass.png",
                        f"Accuracy of {label} on low-pass-filtered test images against the filter's bandwidth.")]


def plot_gradients(label: str, payload: dict[str, Any], out: Path) -> list[FigureInfo]:
    result = payload["modes"].get("default") or next(iter(payload["modes"].values()))
    ms = sorted(int(k) for k in result if k.isdigit())
    if not ms:
        return []
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.2), dpi=110)
    ax.plot(ms, [result[str(m)]["grad_norm"] for m in ms], marker="o", label="mean gradient L2 norm")
    ax.plot(ms, [result[str(m)]["variance"] ** 0.5 for m in ms], marker="s", label="√variance of the gradient")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("M (views per sample)")
    ax.set_ylabel("gradient L2 norm (log scale)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"{label}: gradient norm against M")
    fig.tight_layout()
    return [save_figure(fig, out / f"{_stem(label)}_gradients.png",
                        f"Gradient L2 norm and its spread against M at the weights of {label}.")]


def _stem(label: str) -> str:
    """A label as a file name: letters, digits, ``.=-_`` kept, the rest ``_``."""
    return re.sub(r"[^A-Za-z0-9.=_-]+", "_", label).strip("_") or "run"


#: suite name -> function(label, payload, out_dir) -> figures written
PLOTTERS: dict[str, Callable[[str, dict[str, Any], Path], list[FigureInfo]]] = {
    "corruptions": plot_corruptions,
    "fourier": plot_fourier,
    "lowpass": plot_lowpass,
    "gradients": plot_gradients,
}


def plot_eval_results(runs: Sequence[tuple[str, dict[str, dict[str, Any]]]], out_dir: str | Path
                      ) -> tuple[list[FigureInfo], list[str]]:
    """Draw every suite result of every ``(label, eval results)`` pair into ``out_dir`` (files named
    ``<label>_<suite>...``); returns the figures and notes on the results no plotter draws."""
    written: list[FigureInfo] = []
    skipped: list[str] = []
    for label, results in runs:
        for stem, payload in results.items():
            plot = PLOTTERS.get(payload["suite"])
            if plot is None:
                skipped.append(f"{label}: eval/{stem}.json (suite {payload['suite']}) has no figure; "
                               "its numbers are in the JSON")
                continue
            written += plot(label if stem == payload["suite"] else f"{label}_{stem}", payload, Path(out_dir))
    return written, skipped
