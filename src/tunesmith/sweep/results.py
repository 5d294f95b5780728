"""A sweep's result: the table of trials sorted by the metric (printed, and saved as
results.csv and results.md), the metric against each swept parameter, and every trial's
validation curve on one chart."""

from __future__ import annotations

import csv
from pathlib import Path

from tunesmith.sweep.trials import Trial

RESULTS_CSV = "results.csv"
RESULTS_MD = "results.md"
METRIC_PLOT = "metric_vs_params.png"
CURVES_PLOT = "val_curves.png"


def ranked(trials: list[Trial], mode: str) -> list[Trial]:
    """Best first; trials without a value last."""
    sign = 1 if mode == "min" else -1

    def key(t: Trial) -> tuple[int, float, int]:
        best = t.best(mode)
        return (best is None, sign * best if best is not None else 0.0, t.index)

    return sorted(trials, key=key)


def best_trial(trials: list[Trial], mode: str) -> Trial | None:
    """The best trial whose model exists (a succeeded one)."""
    done = [t for t in ranked(trials, mode) if t.status == "succeeded" and t.best(mode) is not None]
    return done[0] if done else None


def rows(trials: list[Trial], metric: str, mode: str) -> tuple[list[str], list[list[str]]]:
    names = list(trials[0].params) if trials else []
    header = ["trial", *names, f"best {metric}", "steps", "status", "run", "note"]  # steps trained
    body = []
    for t in ranked(trials, mode):
        best = t.best(mode)
        body.append(
            [
                t.name,
                *(_fmt(t.params.get(n)) for n in names),
                f"{best:.4f}" if best is not None else "-",
                str(t.steps),
                t.status,
                f"runs/{t.run}" if t.run is not None else "-",
                t.note,
            ]
        )
    return header, body


def format_table(header: list[str], body: list[list[str]]) -> str:
    """A plain-text table, the note column left unpadded."""
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = []
    for r in [header, *body]:
        cells = [c.ljust(w) for c, w in zip(r[:-1], widths[:-1], strict=True)]
        lines.append("  ".join([*cells, r[-1]]).rstrip())
    return "\n".join(lines)


def write_results(folder: Path, trials: list[Trial], metric: str, mode: str) -> str:
    """Write results.csv, results.md and the two plots; return the table as printed."""
    header, body = rows(trials, metric, mode)
    with open(folder / RESULTS_CSV, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *body])
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in body]
    (folder / RESULTS_MD).write_text("\n".join(md) + "\n", encoding="utf-8")
    _plot_metric(folder / METRIC_PLOT, trials, metric, mode)
    _plot_curves(folder / CURVES_PLOT, trials, metric)
    return format_table(header, body)


def _fmt(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _plot_metric(path: Path, trials: list[Trial], metric: str, mode: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(trials[0].params) if trials else []
    fig, axes = plt.subplots(1, max(1, len(names)), figsize=(4 * max(1, len(names)), 3.2))
    axes = axes if hasattr(axes, "__len__") else [axes]
    for ax, name in zip(axes, names, strict=False):
        points = [(t.params[name], t.best(mode), t.status) for t in trials]
        for status, marker in (("succeeded", "o"), ("stopped", "x"), ("failed", "s")):
            xs = [p for p, v, s in points if v is not None and s == status]
            ys = [v for p, v, s in points if v is not None and s == status]
            if xs:
                ax.scatter(xs, ys, marker=marker, label=status)
        values = [p for p, _, _ in points if isinstance(p, (int, float))]
        if values and min(values) > 0 and max(values) / min(values) >= 100:
            ax.set_xscale("log")
        ax.set_xlabel(name)
        ax.set_ylabel(f"best {metric}")
        if ax.get_legend_handles_labels()[0]:  # none before any trial has a value
            ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_curves(path: Path, trials: list[Trial], metric: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4))
    for t in trials:
        if t.curve:
            label = f"{t.name} " + " ".join(f"{k}={_fmt(v)}" for k, v in t.params.items())
            style = "--" if t.status == "stopped" else "-"
            ax.plot([s for s, _ in t.curve], [v for _, v in t.curve], style, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="x-small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
