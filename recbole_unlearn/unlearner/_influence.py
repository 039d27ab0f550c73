"""Pieces of influence-function unlearning on a bipartite graph: IFRU's importance scores for
pruning, its spillover set and fixed negatives (the closed-form BPR derivatives are in
``_bpr_derivatives``).

Zhang et al., "Recommendation Unlearning via Influence Function", ACM TORS 2024 (IFRU).

Graphs here are the bipartite user–item graphs of a RecBole dataset: node ``u`` is user ``u``,
node ``n_users + i`` is item ``i`` (the layout of LightGCN's ego embeddings).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def _counts(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> np.ndarray:
    """Edges per node of the bipartite graph, [n_users + n_items]."""
    return np.bincount(np.concatenate([users, n_users + items]), minlength=n_users + n_items)


def importance_scores(
    users: np.ndarray,
    items: np.ndarray,
    forget_users: np.ndarray,
    forget_items: np.ndarray,
    n_users: int,
    n_items: int,
    k_hop: int = 1,
) -> np.ndarray:
    """IFRU's importance of every node for a request, [n_users + n_items] float64.

    On the graph of D_a (``users``/``items``, the forgotten edges included) with a self-loop
    at every node, deg(v) = 1 + #edges(v).  Seeds: s₀(v) = #forgotten edges at v / deg(v).
    Each hop: s_{t+1}(w) = Σ_{v ∈ N(w) ∪ {w}} s_t(v) / deg(w).  Returns s_k (s₀ for k = 0);
    nodes that no k-hop walk from a forgotten edge reaches score 0.
    """
    if k_hop < 0:
        raise ValueError("k_hop must be >= 0")
    n = n_users + n_items
    deg = 1.0 + _counts(users, items, n_users, n_items)
    score = _counts(forget_users, forget_items, n_users, n_items) / deg
    if k_hop:
        rows = np.concatenate([users, n_users + items, np.arange(n)])
        cols = np.concatenate([n_users + items, users, np.arange(n)])
        adj = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
        for _ in range(k_hop):
            score = (adj @ score) / deg
    return score


def keep_by_quantile(scores: np.ndarray, quantile: float) -> np.ndarray:
    """Nodes whose score is above the ``quantile`` of the reached nodes' scores, sorted [m].

    Reached = score > 0.  ``quantile`` 0 keeps every reached node; IFRU's code uses 0.4.
    """
    if not 0.0 <= quantile < 1.0:
        raise ValueError("quantile must be in [0, 1)")
    reached = np.flatnonzero(scores > 0)
    if quantile == 0.0 or len(reached) == 0:
        return reached
    cut = np.quantile(scores[reached], quantile)
    return reached[scores[reached] > cut]


def spillover_mask(
    users: np.ndarray,
    items: np.ndarray,
    forget_users: np.ndarray,
    forget_items: np.ndarray,
    n_users: int,
    n_items: int,
    min_drop: float = 0.01,
) -> np.ndarray:
    """Which retained edges (``users``/``items`` = D_r) belong to IFRU's spillover set D_ch,
    [len(users)] bool.

    A node is affected when the request removes more than ``min_drop`` of its D_a degree; an
    edge of D_r is in D_ch when its user or its item is affected (its normalisation in the
    LightGCN graph changes).
    """
    lost = _counts(forget_users, forget_items, n_users, n_items)
    deg_a = _counts(users, items, n_users, n_items) + lost
    drop = np.divide(lost, deg_a, out=np.zeros(len(lost)), where=deg_a > 0)
    affected = drop > min_drop
    return affected[users] | affected[n_users + items]


def sample_negatives(users: np.ndarray, positives: np.ndarray, n_items: int, rng: np.random.Generator) -> np.ndarray:
    """One uniform negative item per entry of ``users``: an item ≥ 1 (0 is RecBole's padding)
    that is not among the user's items (``positives``: sorted keys user·n_items + item), [n]."""
    neg = rng.integers(1, n_items, size=len(users))
    todo = np.arange(len(users))
    while len(todo):
        keys = np.asarray(users[todo], dtype=np.int64) * n_items + neg[todo]
        at = np.minimum(np.searchsorted(positives, keys), len(positives) - 1)
        todo = todo[positives[at] == keys]
        neg[todo] = rng.integers(1, n_items, size=len(todo))
    return neg
