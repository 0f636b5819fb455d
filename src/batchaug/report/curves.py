"""Training curves of one or more runs (the BA paper's Fig. 2-6 kinds) and a summary table."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from batchaug.train.metrics_log import read_metrics

# (metric key, y label, file stem). The x axis is the optimizer step: BA and the baseline take the
# same number of steps, so curves line up step for step as in the paper. A metric that no run
# measured (val_acc of a language model, val_ppl of an image classifier) is not drawn.
CURVES = (
    ("val_acc", "validation accuracy", "val_acc"),
    ("val_ppl", "validation perplexity", "val_ppl"),
    ("val_loss", "validation loss", "val_loss"),
    ("train_loss", "training loss", "train_loss"),
    ("grad_norm", "gradient L2 norm (interval mean)", "grad_norm"),
)
_LOG_SCALE = ("grad_norm", "val_ppl")


def plot_runs(runs: Sequence[str | Path], out_dir: str | Path, labels: Sequence[str] | None = None,
              x: str = "step") -> list[Path]:
    """Draw one PNG per curve in ``out_dir`` comparing ``runs``; returns the written paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = list(labels) if labels else [Path(r).name for r in runs]
    data = [read_metrics(r) for r in runs]
    written = []
    for key, ylabel, stem in CURVES:
        if not any(any(rec.get(key) is not None for rec in recs) for recs in data):
            continue
        fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
        for label, recs in zip(labels, data):
            pts = [(rec[x], rec[key]) for rec in recs if rec.get(key) is not None and rec.get(x) is not None]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker="o" if len(pts) < 30 else None, markersize=3, label=label)
        ax.set_xlabel(x.replace("_", " "))
        ax.set_ylabel(ylabel)
        if key in _LOG_SCALE:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = out / f"{stem}.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written


def runs_table(runs: Sequence[str | Path], labels: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One row per run: final/best accuracy (or perplexity), steps, images seen, images/s, wall time."""
    from batchaug.train.run import summarize

    labels = list(labels) if labels else [Path(r).name for r in runs]
    return [{"run": label, **summarize(r)} for label, r in zip(labels, runs)]


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of :func:`runs_table` rows (with perplexity columns when a run has them)."""
    cols = [("run", "run", "{}"), ("final_val_acc", "val acc", "{:.4f}"), ("best_val_acc", "best val acc", "{:.4f}"),
            ("steps", "steps", "{}"), ("images_seen", "images seen", "{}"), ("views_per_s", "views/s", "{:.0f}"),
            ("images_per_s", "images/s", "{:.0f}"), ("wall_time", "wall time (s)", "{:.1f}")]
    if any(r.get("final_val_ppl") is not None for r in rows):
        ppl = [("final_val_ppl", "val ppl", "{:.2f}"), ("best_val_ppl", "best val ppl", "{:.2f}"),
               ("test_ppl", "test ppl", "{:.2f}")]
        if not any(r.get("final_val_acc") is not None for r in rows):
            cols = [c for c in cols if c[0] not in ("final_val_acc", "best_val_acc")]
        cols = cols[:1] + ppl + cols[1:]
    lines = ["| " + " | ".join(c[1] for c in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        cells = []
        for key, _, fmt in cols:
            v = r.get(key)
            cells.append("-" if v is None else fmt.format(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
