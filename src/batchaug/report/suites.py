"""Figures of what ``batchaug eval`` wrote (``RUN/eval/<suite>.json``): corruption errors per corruption
and severity, the α trade-off (clean accuracy against corruption error as the split-BN blend moves),
Fourier heatmaps side by side, low-pass curves, gradient norms against M.

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

__all__ = ["PLOTTERS", "load_eval_results", "plot_eval_results"]


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


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _alpha_of(mode: str) -> float | None:
    if mode == "main":
        return 0.0
    if mode == "aux":
        return 1.0
    m = re.fullmatch(r"alpha=([0-9.]+)", mode)
    return float(m.group(1)) if m else None


def plot_corruptions(label: str, payload: dict[str, Any], out: Path) -> list[Path]:
    """Error per corruption (mean over severities) per mode, and error against severity."""
    plt = _plt()
    modes = payload["modes"]
    names = sorted({c for r in modes.values() for c in r.get("error", {})})
    if not names:
        return []
    fig, (bars, lines) = plt.subplots(1, 2, figsize=(13, 4.5), dpi=110)
    width = 0.8 / max(len(modes), 1)
    for k, (mode, result) in enumerate(modes.items()):
        means = [sum(result["error"][c].values()) / len(result["error"][c]) for c in names]
        bars.bar([i + k * width for i in range(len(names))], means, width, label=mode)
        severities = sorted(next(iter(result["error"].values())), key=int)
        per_severity = [sum(result["error"][c][s] for c in names) / len(names) for s in severities]
        u_ce = result.get("uCE")
        label = f"{mode} (uCE {u_ce:.3f})" if u_ce is not None else mode
        lines.plot([int(s) for s in severities], per_severity, marker="o", label=label)
    bars.set_xticks([i + 0.4 - width / 2 for i in range(len(names))], names, rotation=70, fontsize=7)
    bars.set_ylabel("error (mean over severities)")
    lines.set_xlabel("severity")
    lines.set_ylabel("mean error over corruptions")
    for ax in (bars, lines):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{label}: corruption error")
    fig.tight_layout()
    written = [_save(fig, out / f"{label}_corruptions.png")]
    written += _alpha_tradeoff(label, payload, out)
    return written


def _alpha_tradeoff(label: str, payload: dict[str, Any], out: Path) -> list[Path]:
    """Split-BN Fig. 3: clean accuracy against uCE for the main/aux/alpha modes, in α order."""
    points = sorted((a, r) for m, r in payload["modes"].items() if (a := _alpha_of(m)) is not None
                    and r.get("uCE") is not None and r.get("clean_error") is not None)
    if len(points) < 2:
        return []
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4), dpi=110)
    ax.plot([r["uCE"] for _, r in points], [1 - r["clean_error"] for _, r in points], marker="o")
    for a, r in points:
        ax.annotate(f"α={a:g}", (r["uCE"], 1 - r["clean_error"]), fontsize=7)
    ax.set_xlabel("uCE (mean corruption error)")
    ax.set_ylabel("clean accuracy")
    ax.grid(alpha=0.3)
    ax.set_title(f"{label}: the α trade-off")
    fig.tight_layout()
    return [_save(fig, out / f"{label}_alpha_tradeoff.png")]


def plot_fourier(label: str, payload: dict[str, Any], out: Path) -> list[Path]:
    """The heatmaps of all modes side by side (lowest frequency at the centre, error 0 to 1)."""
    plt = _plt()
    modes = payload["modes"]
    fig, axes = plt.subplots(1, len(modes), figsize=(3.2 * len(modes) + 0.8, 3.4), dpi=110, squeeze=False)
    image = None
    for ax, (mode, result) in zip(axes[0], modes.items(), strict=True):
        image = ax.imshow(result["grid"], cmap="jet", vmin=0.0, vmax=1.0)
        ax.set_title(f"{mode} (mean {result['mean_error']:.3f})", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    if image is not None:
        fig.colorbar(image, ax=axes[0].tolist(), fraction=0.03)
    fig.suptitle(f"{label}: Fourier sensitivity, norm {next(iter(modes.values()))['norm']:g}")
    return [_save(fig, out / f"{label}_fourier.png")]


def plot_lowpass(label: str, payload: dict[str, Any], out: Path) -> list[Path]:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4), dpi=110)
    for mode, result in payload["modes"].items():
        ax.plot(result["bandwidth"], result["accuracy"], marker="o", markersize=3, label=mode)
    ax.set_xlabel("low-pass bandwidth")
    ax.set_ylabel("accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"{label}: low-pass filtering")
    fig.tight_layout()
    return [_save(fig, out / f"{label}_lowpass.png")]


def plot_gradients(label: str, payload: dict[str, Any], out: Path) -> list[Path]:
    result = payload["modes"].get("default") or next(iter(payload["modes"].values()))
    ms = sorted(int(k) for k in result if k.isdigit())
    if not ms:
        return []
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4), dpi=110)
    ax.plot(ms, [result[str(m)]["grad_norm"] for m in ms], marker="o", label="mean ‖g‖")
    ax.plot(ms, [result[str(m)]["variance"] ** 0.5 for m in ms], marker="s", label="√variance")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("M (views per sample)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"{label}: gradient norm against M")
    fig.tight_layout()
    return [_save(fig, out / f"{label}_gradients.png")]


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    _plt().close(fig)
    return path


#: suite name -> function(label, payload, out_dir) -> written paths
PLOTTERS: dict[str, Callable[[str, dict[str, Any], Path], list[Path]]] = {
    "corruptions": plot_corruptions,
    "fourier": plot_fourier,
    "lowpass": plot_lowpass,
    "gradients": plot_gradients,
}


def plot_eval_results(runs: Sequence[str | Path], out_dir: str | Path,
                      labels: Sequence[str] | None = None) -> list[Path]:
    """Draw every suite result of every run into ``out_dir`` (files named ``<run label>_<suite>...``)."""
    labels = list(labels) if labels else [Path(r).name for r in runs]
    written: list[Path] = []
    for label, run in zip(labels, runs, strict=True):
        for stem, payload in load_eval_results(run).items():
            plot = PLOTTERS.get(payload["suite"])
            if plot is not None:
                written += plot(label if stem == payload["suite"] else f"{label}_{stem}", payload, Path(out_dir))
    return written
