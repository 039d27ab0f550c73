"""Figures of the benchmark (matplotlib, Agg backend, PNG): quality vs time per experiment,
sequential drift and cumulative time, and scaling with request size and dataset size."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from benchmarks.scaling import reference_size  # noqa: E402

QUALITY = (  # (metric, axis label) of the quality-vs-time panels
    ("test_forget_users.recall@20", "Recall@20, forgetting users"),
    ("rbo.rbo@10", "RBO@10 vs Retrain"),
    ("mia_auc", "MIA AUC (0.5 = never seen)"),
)


def _legend(ax, size: int) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=size)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def quality_vs_time(summary: dict, title: str, path: Path) -> Path:
    """One point per row (x: unlearning time, log scale; y: quality, ± std over seeds);
    Original is a dashed line (it has no unlearning time), Retrain a black star, Retrain* grey."""
    rows = summary["rows"]
    fig, axes = plt.subplots(1, len(QUALITY), figsize=(4.2 * len(QUALITY), 3.6))
    for ax, (metric, label) in zip(axes, QUALITY):
        for i, (name, row) in enumerate(rows.items()):
            y = row.get(metric)
            if name == "Original":
                if y:
                    ax.axhline(y["mean"], ls="--", color="grey", label="Original")
                continue
            x = row.get("time_s")
            if not (x and y):
                continue
            style = {"marker": "o", "ms": 7, "color": plt.cm.tab20(i % 20)}  # distinct beyond 10 rows
            if name in ("Retrain", "Retrain*"):
                style = {"marker": "*", "ms": 12, "color": "black" if name == "Retrain" else "grey"}
            ax.errorbar(x["mean"], y["mean"], xerr=x.get("std") or 0, yerr=y.get("std") or 0, label=name,
                        ls="none", capsize=3, **style)
        ax.set_xscale("log")
        ax.set_xlabel("unlearning time (s)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:  # beside the panels: with many rows a legend inside one would hide its points
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    fig.suptitle(title)
    return _save(fig, path)


def sequential(summary: dict, title: str, path: Path) -> Path:
    """Drift of forgetting-user Recall@20 vs Retrain, and cumulative time, per step."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.6))
    for name, steps in summary["chains"].items():
        t = list(range(1, len(steps) + 1))
        ax2.plot(t, [s["cum_time_s"]["mean"] for s in steps], marker="o", label=name,
                 color="black" if name == "Retrain" else None)
        if name != "Retrain":
            drift = [s.get("drift.test_forget_users.recall@20") for s in steps]
            ax1.errorbar(t, [d["mean"] if d else float("nan") for d in drift],
                         yerr=[(d.get("std") or 0) if d else 0 for d in drift], marker="o", capsize=3, label=name)
    ax1.axhline(0, color="black", lw=0.8)
    ax1.set_xlabel("request")
    ax1.set_ylabel("Δ Recall@20 forgetting users (row − Retrain)")
    ax2.set_xlabel("request")
    ax2.set_ylabel("cumulative time (s)")
    ax2.set_yscale("log")
    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        _legend(ax, 8)
    fig.suptitle(title)
    return _save(fig, path)


def scaling(summaries: list[dict], title: str, path: Path) -> Path:
    """Time vs request size (one line per dataset and unlearner), and time at the reference
    request size (:func:`benchmarks.scaling.reference_size`) vs training interactions."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    markers = "osd^v<>"
    names = list(dict.fromkeys(n for s in summaries for n in s["rows"]))
    colors = {n: f"C{i}" for i, n in enumerate(names)}
    for k, s in enumerate(sorted(summaries, key=lambda s: s["train"]["interactions"])):
        for name, row in s["rows"].items():
            sizes = sorted(row)
            ax1.plot(sizes, [row[x]["mean"] for x in sizes], marker=markers[k % len(markers)],
                     color=colors[name], label=f"{name} · {s['dataset']}")
    ref = reference_size(summaries)
    for name in names:
        pts = sorted((s["train"]["interactions"], s["rows"][name][ref]["mean"])
                     for s in summaries if ref in s["rows"].get(name, {}))
        if pts:
            ax2.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color=colors[name], label=name)
    ax1.set_xscale("log", base=2)
    ax1.set_xlabel("request size (users)")
    ax2.set_xscale("log")
    ax2.set_xlabel("training interactions")
    ax2.set_title(f"request of {ref} users", fontsize=9)
    for ax in (ax1, ax2):
        ax.set_yscale("log")
        ax.set_ylabel("unlearning time (s)")
        ax.grid(alpha=0.3)
        _legend(ax, 7)
    fig.suptitle(title)
    return _save(fig, path)
