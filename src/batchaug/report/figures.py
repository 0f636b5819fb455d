"""The papers' figures drawn across runs: one curve (or point) per group of runs that differ only by seed.

- validation error against steps and against epochs (BA Figs. 1-3: an M sweep); for language models,
  validation perplexity against steps on a log scale (BA Table 1's PTB row has no figure);
- gradient L2 norm against epochs (BA Figs. 4 and 6), from the ``train.log_every`` step lines when a run
  has them, else from the evaluation lines;
- training (dashed) and validation error (BA Fig. 5: baseline, BA, regime adaptation);
- SBA accuracy against η (SBA Fig. 2);
- SBA cost ratio and accuracy against the layer k (SBA Fig. 3);
- split-BN accuracy against corruption error as α moves (Split-BN Fig. 3), single-BN runs as points.

Each function returns the :class:`~batchaug.report.plotting.FigureInfo` of what it wrote, or nothing
when the runs hold nothing to draw; curves are means over a group's runs with a ±1 std band (n > 1).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from batchaug.report.groups import RunGroup, format_value, method_p
from batchaug.report.plotting import FigureInfo, label_points, pyplot, save_figure
from batchaug.report.suites import alpha_of

__all__ = ["FIGURES", "alpha_tradeoff", "grad_norm", "sba_eta", "sba_layers", "train_val_error", "val_error",
           "val_ppl"]

_X_LABEL = {"step": "optimizer steps", "epoch": "epochs (passes over the training images)"}


def _colors(n: int) -> list[Any]:
    plt = pyplot()
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def _n(group: RunGroup) -> str:
    return f" (n={group.n})" if group.n > 1 else ""


def _legend(fig: Any, ax: Any, entries: int, **kw: Any) -> None:
    """A legend inside the axes, or beside them when it has too many entries to leave the curves visible."""
    if entries <= 6:
        ax.legend(fontsize=8, **kw)
        return
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), **kw)
    fig.set_size_inches(fig.get_size_inches()[0] + 3.2, fig.get_size_inches()[1])


def _draw_curve(ax: Any, pts: list[tuple[float, float, float, int]], color: Any, label: str | None, scale: float = 1.0,
                offset: float = 0.0, band: bool = True, **kw: Any) -> None:
    xs = [p[0] for p in pts]
    ys = [offset + scale * p[1] for p in pts]
    ax.plot(xs, ys, color=color, label=label, marker="o" if len(pts) < 25 else None, markersize=3, **kw)
    if band and any(p[3] > 1 for p in pts):
        sd = [abs(scale) * p[2] for p in pts]
        lo = [y - s for y, s in zip(ys, sd, strict=True)]
        hi = [y + s for y, s in zip(ys, sd, strict=True)]
        ax.fill_between(xs, lo, hi, color=color, alpha=0.15, linewidth=0)


def _validation_curves(groups: Sequence[RunGroup], out: Path, key: str, x: str, *, ylabel: str, title: str,
                       file: str, caption: str, log: bool = False, scale: float = 1.0,
                       offset: float = 0.0) -> list[FigureInfo]:
    """One figure of the evaluation lines' ``key`` against ``x``, a curve per group that has it."""
    curves = [(g, g.curve(key, x)) for g in groups]
    curves = [(g, c) for g, c in curves if c]
    if not curves:
        return []
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for (g, pts), color in zip(curves, _colors(len(curves)), strict=True):
        _draw_curve(ax, pts, color, g.label + _n(g), scale=scale, offset=offset)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel(_X_LABEL[x])
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title} against {'steps' if x == 'step' else 'epochs'}")
    ax.grid(alpha=0.3, which="both" if log else "major")
    _legend(fig, ax, len(curves))
    fig.tight_layout()
    return [save_figure(fig, out / file, caption)]


def val_error(groups: Sequence[RunGroup], out: Path, x: str = "step") -> list[FigureInfo]:
    """Validation error (%) against ``x`` (``step`` or ``epoch``), one curve per group."""
    return _validation_curves(
        groups, out, "val_acc", x, ylabel="validation error (%)", title="Validation error", file=f"val_error_{x}s.png",
        caption=f"Validation error (100 − 100·val_acc) against {_X_LABEL[x]}, mean over each group's seeds "
                "(band: ±1 std).", scale=-100.0, offset=100.0)


def val_ppl(groups: Sequence[RunGroup], out: Path, x: str = "step") -> list[FigureInfo]:
    """Validation perplexity (log scale) against ``x``, one curve per language-model group."""
    return _validation_curves(
        groups, out, "val_ppl", x, ylabel="validation perplexity (log scale)", title="Validation perplexity",
        file="val_ppl.png", log=True,
        caption=f"Validation perplexity (exp of the mean token loss; lower is better) against {_X_LABEL[x]}, "
                "mean over each group's seeds (band: ±1 std).")


def grad_norm(groups: Sequence[RunGroup], out: Path, x: str = "epoch") -> list[FigureInfo]:
    """Gradient L2 norm against ``x``: the step lines of a group when it has them, else its evaluation lines."""
    curves = []
    for g in groups:
        steps = g.curve("grad_norm", x, lines="steps")
        pts = steps or g.curve("grad_norm", x)
        if pts:
            curves.append((g, pts, "every train.log_every steps" if steps else "mean between evaluations"))
    if not curves:
        return []
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for (g, pts, _), color in zip(curves, _colors(len(curves)), strict=True):
        _draw_curve(ax, pts, color, g.label + _n(g))
    ax.set_yscale("log")
    ax.set_xlabel(_X_LABEL[x])
    ax.set_ylabel("gradient L2 norm (interval mean, log scale)")
    ax.set_title(f"Gradient L2 norm against {'epochs' if x == 'epoch' else 'steps'}")
    ax.grid(alpha=0.3, which="both")
    _legend(fig, ax, len(curves))
    fig.tight_layout()
    sources = sorted({how for _, _, how in curves})
    return [save_figure(fig, out / f"grad_norm_{x}s.png",
                        "Gradient L2 norm of the training steps (" + "; ".join(sources) + "), mean over seeds.")]


def train_val_error(groups: Sequence[RunGroup], out: Path) -> list[FigureInfo]:
    """BA Fig. 5: training error (dashed; on the augmented training views) and validation error (solid)
    against steps, of regime adaptation, BA at the same M and the baseline trained like them when the runs
    hold an RA run, else of every group."""
    chosen = list(groups)
    ras = [g for g in groups if g.method == "ra"]
    if ras:
        ms = {g.settings.get("method.m") for g in ras}
        chosen = [g for g in groups if g.method == "ra" or (g.method in ("ba", "baseline") and (
            g.method == "baseline" or g.settings.get("method.m") in ms or g.settings.get("method.m") == 1)
            and any(_same_but(g, r, ()) for r in ras))]
    curves = [(g, g.curve("train_acc", "step"), g.curve("val_acc", "step")) for g in chosen]
    curves = [c for c in curves if c[1] and c[2]]
    if not curves:
        return []
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.6, 4.6), dpi=120)
    for (g, train, val), color in zip(curves, _colors(len(curves)), strict=True):
        _draw_curve(ax, train, color, None, scale=-100.0, offset=100.0, band=False, linestyle="--")
        _draw_curve(ax, val, color, g.label + _n(g), scale=-100.0, offset=100.0, band=False)
    what = "baseline vs BA vs regime adaptation" if ras else "all runs"
    ax.set_xlabel(_X_LABEL["step"])
    ax.set_ylabel("error (%)")
    ax.set_title(f"Training (dashed) and validation (solid) error\n{what}", fontsize=10)
    ax.grid(alpha=0.3)
    _legend(fig, ax, len(curves), title="dashed: training, solid: validation", title_fontsize=7)
    fig.tight_layout()
    return [save_figure(fig, out / "train_val_error.png",
                        "Training error (dashed: the augmented training views between evaluations) and "
                        "validation error (solid) against steps, mean over seeds (BA Fig. 5).")]


def _same_but(a: RunGroup, b: RunGroup, keys: Sequence[str]) -> bool:
    """Whether two groups agree on every setting outside ``keys`` and the method section."""
    skip = set(keys)
    ka = {k: v for k, v in a.settings.items() if k not in skip and not k.startswith("method.")}
    kb = {k: v for k, v in b.settings.items() if k not in skip and not k.startswith("method.")}
    return ka == kb


def _acc(g: RunGroup) -> tuple[float | None, float | None]:
    mean, sd, _ = g.stat(g.acc_key())
    return (None, None) if mean is None else (100 * mean, None if sd is None else 100 * sd)


def _references(sba: Sequence[RunGroup], groups: Sequence[RunGroup]) -> list[RunGroup]:
    """Non-SBA groups trained like the SBA groups (same settings outside the method): the baselines."""
    return [g for g in groups if g.method in ("baseline", "ba") and any(_same_but(g, s, ()) for s in sba)]


def sba_eta(groups: Sequence[RunGroup], out: Path) -> list[FigureInfo]:
    """SBA Fig. 2: accuracy against η, one line per family of SBA groups that differ only in η."""
    sba = [g for g in groups if g.method == "sba" and g.settings.get("method.eta") is not None]
    families: list[list[RunGroup]] = []
    for g in sba:
        for fam in families:
            if {k: v for k, v in fam[0].settings.items() if k != "method.eta"} == \
                    {k: v for k, v in g.settings.items() if k != "method.eta"}:
                fam.append(g)
                break
        else:
            families.append([g])
    families = [sorted(f, key=lambda g: g.settings["method.eta"]) for f in families
                if len({g.settings["method.eta"] for g in f}) > 1]
    if not families:
        return []
    etas = sorted({g.settings["method.eta"] for f in families for g in f})
    pos = {e: i for i, e in enumerate(etas)}
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    refs = _references([g for f in families for g in f], groups)
    colors = _colors(len(families) + len(refs))
    for fam, color in zip(families, colors[:len(families)], strict=True):
        pts = [(pos[g.settings["method.eta"]], *_acc(g)) for g in fam]
        pts = [p for p in pts if p[1] is not None]
        name = "SBA" + (f" M={fam[0].settings.get('method.m')}" if fam[0].settings.get("method.m") else "")
        if len(families) > 1:
            name = " ".join(p for p in fam[0].label.split() if not p.startswith("η=")) or name
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] or 0 for p in pts], marker="o",
                    capsize=3, color=color, label=name + (f" (n={fam[0].n})" if fam[0].n > 1 else ""))
    for g, color in zip(refs, colors[len(families):], strict=True):
        mean, sd = _acc(g)
        if mean is not None:
            ax.axhline(mean, color=color, linestyle="--", label=f"{g.label}{_n(g)}: {mean:.2f}%")
    ax.set_xticks(range(len(etas)), [format_value(e) for e in etas])
    ax.set_xlabel("η, weight of the KL soft-label term")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("SBA: accuracy against η")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return [save_figure(fig, out / "sba_eta.png",
                        "Accuracy of SBA runs against η (error bars: ±1 std over seeds); dashed: runs without "
                        "SBA trained the same way (SBA Fig. 2).")]


def _per_step_time(g: RunGroup) -> float | None:
    times = [r.summary["wall_time"] / r.summary["steps"] for r in g.runs
             if r.summary.get("wall_time") and r.summary.get("steps")]
    return statistics.fmean(times) if times else None


def sba_layers(groups: Sequence[RunGroup], out: Path) -> list[FigureInfo]:
    """SBA Fig. 3: the cost ratio t_BA / t_SBA and the accuracy of SBA and BA against the layer k.

    SBA runs with ``layer_choice: fixed`` give k; "BA" at k is the SBA run at the same k with p = 1 (batch
    augmentation in latent space at every step, as the paper compares), or, without one, the input-space
    BA run with the same M trained the same way. t is the wall time per step of the whole run (the runs
    take the same number of steps).
    """
    fixed = [g for g in groups if g.method == "sba" and g.settings.get("method.layer_choice") == "fixed"
             and g.settings.get("method.fixed_layer")]
    sba = [g for g in fixed if (method_p(g.settings) or 0) < 1]
    latent_ba = {g.settings["method.fixed_layer"]: g for g in fixed if method_p(g.settings) == 1}
    layers = _layer_order(sba)
    if len(layers) < 2:
        return []
    input_ba = [g for g in groups if g.method == "ba" and any(_same_but(g, s, ()) and
                                                               g.settings.get("method.m") == s.settings.get("method.m")
                                                               for s in sba)]
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4), dpi=120)
    ratio_pts, sba_pts, ba_pts = [], [], []
    for i, k in enumerate(layers):
        g = next(s for s in sba if s.settings["method.fixed_layer"] == k)
        ref = latent_ba.get(k) or (input_ba[0] if input_ba else None)
        t_sba, t_ref = _per_step_time(g), _per_step_time(ref) if ref else None
        if t_sba and t_ref:
            ratio_pts.append((i, t_ref / t_sba))
        acc, sd = _acc(g)
        if acc is not None:
            sba_pts.append((i, acc, sd))
        if k in latent_ba:
            acc, sd = _acc(latent_ba[k])
            if acc is not None:
                ba_pts.append((i, acc, sd))
    where = "latent BA at k (p = 1)" if latent_ba else (f"input BA ({input_ba[0].label})" if input_ba else "")
    if ratio_pts:
        left.plot([p[0] for p in ratio_pts], [p[1] for p in ratio_pts], marker="o", label=f"t_BA / t_SBA, BA = {where}")
        left.axhline(1.0, color="grey", linewidth=0.8, linestyle=":", label="equal cost")
    left.set_xticks(range(len(layers)), layers, rotation=20, fontsize=8)
    left.set_xlabel("layer k where the batch is augmented")
    left.set_ylabel("cost ratio t_BA / t_SBA (wall time per step)")
    left.set_title("cost ratio", fontsize=9)
    left.legend(fontsize=7)
    for pts, name, style in ((sba_pts, "SBA", "o-"), (ba_pts, "BA at k (p = 1)", "s--")):
        if pts:
            right.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] or 0 for p in pts], fmt=style,
                           capsize=3, label=name)
    if not ba_pts and input_ba:
        acc, _ = _acc(input_ba[0])
        if acc is not None:
            right.axhline(acc, linestyle="--", color="C1", label=f"{input_ba[0].label} (input space)")
    right.set_xticks(range(len(layers)), layers, rotation=20, fontsize=8)
    right.set_xlabel("layer k where the batch is augmented")
    right.set_ylabel("test accuracy (%)")
    right.set_title("accuracy", fontsize=9)
    right.legend(fontsize=7)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.suptitle("SBA against BA across the layer k")
    fig.tight_layout()
    return [save_figure(fig, out / "sba_layers.png",
                        f"Left: wall time per step of BA ({where}) over SBA's, per layer k. Right: test accuracy "
                        "of SBA (and BA at k) against k (SBA Fig. 3).")]


def _layer_order(sba: Sequence[RunGroup]) -> list[str]:
    """The fixed layers of ``sba`` in network order: the order of a ``method.layers`` list that holds them
    all, else first-seen order."""
    names = list(dict.fromkeys(g.settings["method.fixed_layer"] for g in sba))
    for g in sba:
        listed = g.settings.get("method.layers") or []
        if isinstance(listed, list) and set(names) <= set(listed):
            return [n for n in listed if n in names]
    return names


def alpha_tradeoff(groups: Sequence[RunGroup], out: Path) -> list[FigureInfo]:
    """Split-BN Fig. 3 across runs: clean accuracy against uCE of every split-BN group as α moves (eval
    modes main / alpha=<a> / aux of ``eval/corruptions.json``), the other groups as single points."""
    curves, points = [], []
    for g in groups:
        per_alpha: dict[float, list[tuple[float, float]]] = {}
        single: list[tuple[float, float]] = []
        for run in g.runs:
            payload = run.eval_results.get("corruptions")
            if not payload:
                continue
            for mode, r in payload["modes"].items():
                if r.get("uCE") is None or r.get("clean_error") is None:
                    continue
                a = alpha_of(mode)
                if a is not None:
                    per_alpha.setdefault(a, []).append((100 * r["uCE"], 100 * (1 - r["clean_error"])))
                elif mode == "default":
                    single.append((100 * r["uCE"], 100 * (1 - r["clean_error"])))
        if len(per_alpha) >= 2:
            curves.append((g, sorted((a, statistics.fmean(p[0] for p in v), statistics.fmean(p[1] for p in v))
                                     for a, v in per_alpha.items())))
        elif single:
            points.append((g, statistics.fmean(p[0] for p in single), statistics.fmean(p[1] for p in single)))
    if not curves:
        return []
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.6), dpi=120)
    colors = _colors(len(curves) + len(points))
    for (g, pts), color in zip(curves, colors[:len(curves)], strict=True):
        ax.plot([p[1] for p in pts], [p[2] for p in pts], marker="o", color=color,
                label=f"{g.label}{_n(g)}: α from 0 (main BN) to 1 (aux BN)")
    for (g, x, y), color in zip(points, colors[len(curves):], strict=True):
        ax.plot([x], [y], marker="s", linestyle="none", markersize=8, color=color, label=f"{g.label}{_n(g)}")
    for _, pts in curves:
        label_points(ax, [(f"α={a:g}", x, y) for a, x, y in pts])
    ax.set_xlabel("uCE, mean corruption error (%)")
    ax.set_ylabel("clean accuracy (%)")
    ax.set_title("Split BN: accuracy against corruption error as α moves")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    limits = sorted({str(r.eval_results["corruptions"].get("limit")) for g in groups for r in g.runs
                     if "corruptions" in r.eval_results})
    return [save_figure(fig, out / "alpha_tradeoff.png",
                        "Clean accuracy against uCE (eval/corruptions.json, limit "
                        + ", ".join(limits) + ") of the blended prediction (1 − α)·p_main + α·p_aux; squares: "
                        "runs without split BN (Split-BN Fig. 3).")]


#: The cross-run figures, in report order: name -> function(groups, out_dir) -> figures written.
FIGURES = {
    "val_error_steps": lambda g, o: val_error(g, o, "step"),
    "val_error_epochs": lambda g, o: val_error(g, o, "epoch"),
    "val_ppl": val_ppl,
    "grad_norm_epochs": lambda g, o: grad_norm(g, o, "epoch"),
    "train_val_error": train_val_error,
    "sba_eta": sba_eta,
    "sba_layers": sba_layers,
    "alpha_tradeoff": alpha_tradeoff,
}
