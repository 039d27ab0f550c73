"""The picture of a run, drawn beside results.json: were the forgotten pairs forgotten?

Left: the predicted probability of the forgotten pairs under each model (the Original, the
unlearned model and, with ``compare: retrain``, Retrain), against pairs of the same users that
no split ever held.  A model that forgot scores the forgotten pairs like the never-seen ones.
Right (with Retrain): the forgetting users' Recall@20 against the time each row took.
"""
from __future__ import annotations

import numpy as np
import torch


def pair_probabilities(model, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """The model's probability of each (user, item) pair, [n]."""
    with torch.no_grad():
        model.eval()
        return model.predict_proba(torch.as_tensor(users, dtype=torch.long),
                                   torch.as_tensor(items, dtype=torch.long)).double().cpu().numpy()


def draw(path, scores: dict, rows: dict, title: str) -> bool:
    """Write the PNG; ``scores`` maps a row name to (forgotten [n], never seen [m]) probabilities.
    Returns False (nothing written) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    quality = "Retrain" in rows
    fig, axes = plt.subplots(1, 2 if quality else 1, figsize=(12 if quality else 7, 4.2), squeeze=False)
    ax = axes[0, 0]
    finite = np.concatenate([np.concatenate(v) for v in scores.values()])
    bins = np.linspace(float(finite.min()), float(finite.max()) + 1e-9, 31)
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colour = {name: cycle[k % len(cycle)] for k, name in enumerate(rows)}  # one colour per row, both panels
    for name, (forgotten, unseen) in scores.items():
        c = colour[name]
        ax.hist(forgotten, bins=bins, density=True, histtype="step", linewidth=2, color=c,
                label=f"{name}: forgotten pairs (mean {forgotten.mean():.3f})")
        ax.hist(unseen, bins=bins, density=True, histtype="step", linestyle=":", color=c,
                label=f"{name}: never-seen pairs (mean {unseen.mean():.3f})")
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("density")
    ax.set_title("forgotten pairs vs never-seen pairs of the same users")
    ax.legend(fontsize=7)
    if quality:
        ax = axes[0, 1]
        for name, row in rows.items():
            t = row.get("time_s") if name != "Original" else row.get("train_time_s")
            recall = row.get("test_forget_users", {}).get("recall@20")
            if t and recall is not None:
                ax.scatter([t], [recall], color=colour[name], s=40)
                ax.annotate(name, (t, recall), textcoords="offset points", xytext=(5, 4), fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("time (s, log scale; Original: its training)")
        ax.set_ylabel("forgetting users' Recall@20")
        ax.set_title("quality vs time")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
    return True
