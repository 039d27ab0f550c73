"""Pure metric functions for recommendation unlearning (numpy / torch only, no RecBole).

Metrics
-------
* :func:`rbo` / :func:`mean_rbo` -- Rank-Biased Overlap between two top-k rankings, in the
  extrapolated form ``RBO_ext`` of

      W. Webber, A. Moffat, J. Zobel. "A similarity measure for indefinite rankings".
      ACM Transactions on Information Systems 28(4), article 20, 2010.
      doi:10.1145/1852102.1852106  (equation 30, equal-length lists; equation 32 is the uneven-length form)

  Used to compare the top-k lists of the unlearned model with those of a reference model
  (e.g. the model retrained from scratch without the forgotten interactions).
* :func:`repredict_score` -- mean predicted probability on the forgotten (user, item) pairs.
* :func:`membership_auc` -- ROC AUC (Mann-Whitney U statistic) of a membership-inference
  attacker that ranks forgotten pairs above never-seen pairs by model score.
* :func:`topk_recall_ndcg` -- full-ranking Recall@k and NDCG@k with RecBole's definitions.
"""
from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import torch

__all__ = [
    "rbo",
    "mean_rbo",
    "repredict_score",
    "membership_auc",
    "topk_recall_ndcg",
]

# Rows processed at once by :func:`mean_rbo`; bounds the [rows, k, k] comparison tensor.
_RBO_CHUNK_ROWS = 4096

PositivesType = Union[Sequence[torch.Tensor], tuple]


def _check_p(p: float) -> float:
    p = float(p)
    if not 0.0 < p < 1.0:
        raise ValueError(f"RBO persistence p must lie strictly between 0 and 1, got {p}")
    return p


def rbo(a: Sequence[int], b: Sequence[int], p: float = 0.9, k: int | None = None) -> float:
    """Extrapolated Rank-Biased Overlap ``RBO_ext`` of two rankings truncated at depth ``k``.

    Variant: Webber, Moffat & Zobel (2010), eq. 30 (equal-length prefixes)::

        RBO_ext = (X_k / k) * p**k + (1 - p) / p * sum_{d=1..k} (X_d / d) * p**d

    where ``X_d = |set(a[:d]) & set(b[:d])|`` is the overlap of the two depth-``d`` prefixes.
    The result lies in ``[0, 1]``: 1.0 for identical prefixes, 0.0 for disjoint ones.  ``p``
    is the persistence (user patience): smaller ``p`` weights the top of the lists more; with
    ``p = 0.9`` the first 10 ranks carry about 86% of the weight.

    Args:
        a: first ranking, item ids best first (shape ``[len_a]``); must not repeat an id.
        b: second ranking, item ids best first (shape ``[len_b]``); must not repeat an id.
        p: persistence, ``0 < p < 1``.
        k: evaluation depth.  Defaults to the common length ``min(len(a), len(b))``; if a list
            is shorter than ``k`` the common length is used instead (lists of different length
            are truncated to the shorter one; the uneven-length form, eq. 32, is not used).

    Returns:
        The RBO_ext value as a Python float.

    Raises:
        ValueError: if a list is empty, ``k < 1``, ``p`` is not in (0, 1), or a list repeats an
            item id within the evaluated depth.
    """
    p = _check_p(p)
    a_list = [int(x) for x in (a.tolist() if hasattr(a, "tolist") else a)]
    b_list = [int(x) for x in (b.tolist() if hasattr(b, "tolist") else b)]
    if len(a_list) == 0 or len(b_list) == 0:
        raise ValueError("rbo needs two non-empty rankings")
    depth = min(len(a_list), len(b_list))
    if k is not None:
        if int(k) < 1:
            raise ValueError(f"rbo depth k must be >= 1, got {k}")
        depth = min(depth, int(k))
    a_list, b_list = a_list[:depth], b_list[:depth]
    if len(set(a_list)) != depth or len(set(b_list)) != depth:
        raise ValueError("rbo rankings must not repeat an item id")

    seen_a: set[int] = set()
    seen_b: set[int] = set()
    overlap = 0
    weighted_sum = 0.0
    for d in range(1, depth + 1):
        x_a, x_b = a_list[d - 1], b_list[d - 1]
        # With distinct ids, the overlap grows by the new items that the other prefix holds.
        if x_a == x_b:
            overlap += 1
        else:
            overlap += (x_a in seen_b) + (x_b in seen_a)
        seen_a.add(x_a)
        seen_b.add(x_b)
        weighted_sum += (overlap / d) * p**d
    return (overlap / depth) * p**depth + (1.0 - p) / p * weighted_sum


def _overlap_by_depth(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Prefix overlaps ``X_d`` for every row and depth.

    Args:
        a: ``[n, k]`` long tensor, rows of distinct ids.
        b: ``[n, k]`` long tensor, rows of distinct ids.

    Returns:
        ``[n, k]`` float64 tensor; column ``d-1`` holds ``|a[i, :d] & b[i, :d]|``.
    """
    k = a.shape[1]
    eq = a.unsqueeze(2) == b.unsqueeze(1)  # [n, k, k]: eq[r, i, j] = a[r, i] == b[r, j]
    # A match (i, j) enters the overlap at depth max(i, j) + 1.  Count, per depth d, the
    # matches whose a-position is d (with j <= d) plus those whose b-position is d (i < d).
    idx = torch.arange(k, device=a.device)
    j_le_i = idx.unsqueeze(0) <= idx.unsqueeze(1)  # [k(i), k(j)]
    i_lt_j = idx.unsqueeze(1) < idx.unsqueeze(0)  # [k(i), k(j)]
    new_via_a = (eq & j_le_i).sum(dim=2)  # [n, k] indexed by i
    new_via_b = (eq & i_lt_j).sum(dim=1)  # [n, k] indexed by j
    return (new_via_a + new_via_b).cumsum(dim=1).to(torch.float64)


def mean_rbo(topk_a: torch.Tensor, topk_b: torch.Tensor, p: float = 0.9) -> float:
    """Mean over users of :func:`rbo` (RBO_ext, Webber et al. 2010, eq. 30) of two top-k lists.

    Vectorised: row ``r`` of ``topk_a`` is compared with row ``r`` of ``topk_b``.

    Args:
        topk_a: ``[n_users, k_a]`` long tensor of item ids, best first, distinct per row.
        topk_b: ``[n_users, k_b]`` long tensor of item ids, best first, distinct per row.
        p: persistence, ``0 < p < 1``.

    Returns:
        Mean RBO_ext over the ``n_users`` rows at depth ``k = min(k_a, k_b)``.

    Raises:
        ValueError: on mismatching row counts, zero rows or zero depth, a bad ``p``, or a row
            that repeats an item id.
    """
    p = _check_p(p)
    a = torch.as_tensor(topk_a).detach().cpu().long()
    b = torch.as_tensor(topk_b).detach().cpu().long()
    if a.dim() != 2 or b.dim() != 2:
        raise ValueError("mean_rbo expects two 2-D [n_users, k] tensors")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"mean_rbo row counts differ: {a.shape[0]} vs {b.shape[0]}")
    k = min(a.shape[1], b.shape[1])
    if a.shape[0] == 0 or k == 0:
        raise ValueError("mean_rbo needs at least one row and depth >= 1")
    a, b = a[:, :k], b[:, :k]
    for name, t in (("topk_a", a), ("topk_b", b)):
        srt = t.sort(dim=1).values
        if bool((srt[:, 1:] == srt[:, :-1]).any()):
            raise ValueError(f"mean_rbo: a row of {name} repeats an item id")

    depths = torch.arange(1, k + 1, dtype=torch.float64)
    weights = (1.0 - p) / p * torch.pow(torch.tensor(p, dtype=torch.float64), depths) / depths
    tail = p**k / k
    total = 0.0
    for start in range(0, a.shape[0], _RBO_CHUNK_ROWS):
        x = _overlap_by_depth(a[start : start + _RBO_CHUNK_ROWS], b[start : start + _RBO_CHUNK_ROWS])
        per_row = x @ weights + x[:, -1] * tail  # [rows]
        total += float(per_row.sum())
    return total / a.shape[0]


def repredict_score(probs: torch.Tensor) -> float:
    """Mean predicted probability on the forgotten (user, item) pairs.

    After successful unlearning the model should no longer predict the forgotten interactions,
    so lower is "more forgotten".

    Args:
        probs: ``[n_pairs]`` float tensor (or array-like) of probabilities in ``[0, 1]``.

    Returns:
        The mean as a Python float; ``nan`` when ``probs`` is empty (no forgotten pairs).
    """
    t = torch.as_tensor(probs).detach().cpu().to(torch.float64).reshape(-1)
    if t.numel() == 0:
        return float("nan")
    return float(t.mean())


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values`` ([n]), tied values get the mean of their ranks. O(n log n)."""
    uniq, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    first_rank = np.cumsum(counts) - counts + 1  # rank of the first member of each tie group
    group_rank = first_rank + (counts - 1) / 2.0
    return group_rank[inverse]


def membership_auc(
    member_scores: torch.Tensor | np.ndarray | Sequence[float],
    nonmember_scores: torch.Tensor | np.ndarray | Sequence[float],
) -> float:
    """ROC AUC of the attack "a higher score means the pair was trained on".

    Equals ``P(s_member > s_nonmember) + 0.5 * P(s_member == s_nonmember)`` over all
    (member, non-member) pairs, i.e. the Mann-Whitney U statistic divided by ``n_m * n_n``,
    computed exactly from average ranks in ``O(n log n)``.  Members are the forgotten pairs,
    non-members never-seen pairs.  0.5 means the two are indistinguishable; 1.0 means every
    forgotten pair still scores above every never-seen pair.

    Args:
        member_scores: ``[n_m]`` scores of forgotten pairs.
        nonmember_scores: ``[n_n]`` scores of never-seen pairs.

    Returns:
        AUC in ``[0, 1]``; ``nan`` if either input is empty.

    Raises:
        ValueError: if a score is NaN.
    """
    m = torch.as_tensor(member_scores).detach().cpu().to(torch.float64).reshape(-1).numpy()
    n = torch.as_tensor(nonmember_scores).detach().cpu().to(torch.float64).reshape(-1).numpy()
    if m.size == 0 or n.size == 0:
        return float("nan")
    if np.isnan(m).any() or np.isnan(n).any():
        raise ValueError("membership_auc: scores contain NaN")
    ranks = _average_ranks(np.concatenate([m, n]))
    n_m, n_n = float(m.size), float(n.size)
    u_stat = ranks[: m.size].sum() - n_m * (n_m + 1.0) / 2.0
    return float(u_stat / (n_m * n_n))


def _positive_mask(positives: PositivesType, n_users: int, n_items: int) -> torch.Tensor:
    """Dense ``[n_users, n_items]`` bool mask of the test items of each row.

    A ``tuple`` of length 2 is read as CSR ``(indptr, indices)``; anything else (normally a
    ``list``) as one id tensor per row.
    """
    mask = torch.zeros(n_users, n_items, dtype=torch.bool)
    if isinstance(positives, tuple) and len(positives) == 2:
        indptr = torch.as_tensor(positives[0]).long().reshape(-1)
        indices = torch.as_tensor(positives[1]).long().reshape(-1)
        if indptr.numel() != n_users + 1:
            raise ValueError(
                f"topk_recall_ndcg: CSR indptr has {indptr.numel()} entries, expected "
                f"{n_users + 1} (pass per-row positives as a list, not a tuple)"
            )
        rows = torch.repeat_interleave(torch.arange(n_users), indptr[1:] - indptr[:-1])
        mask[rows, indices[int(indptr[0]) : int(indptr[-1])]] = True
        return mask
    if len(positives) != n_users:
        raise ValueError(
            f"topk_recall_ndcg: got {len(positives)} positive lists for {n_users} score rows"
        )
    for row, items in enumerate(positives):
        items_t = torch.as_tensor(items).long().reshape(-1)
        if items_t.numel():
            mask[row, items_t] = True
    return mask


def topk_recall_ndcg(
    scores: torch.Tensor,
    positives: PositivesType,
    ks: Sequence[int],
) -> dict[str, float]:
    """Full-ranking Recall@k and NDCG@k (binary relevance), RecBole's definitions.

    For every row (user) with at least one positive, the top ``max(ks)`` items by score are
    taken (history items are expected to be masked to ``-inf`` already) and

    * ``recall@k = |top-k & P| / |P|``
    * ``ndcg@k = DCG@k / IDCG@k`` with ``DCG@k = sum_{i<=k, item_i in P} 1 / log2(i + 1)`` and
      ``IDCG@k = sum_{i=1..min(|P|, k)} 1 / log2(i + 1)``

    where ``P`` is the row's set of test items.  Values are averaged over those rows; rows
    without positives are skipped.  Ties in ``scores`` are broken by ``torch.topk``.

    Args:
        scores: ``[n_users, n_items]`` float tensor.
        positives: either a sequence of ``n_users`` long tensors (test item ids of each row), or
            a CSR pair ``(indptr, indices)`` with ``indptr`` of shape ``[n_users + 1]`` and
            ``indices`` of shape ``[nnz]`` (row ``r`` owns ``indices[indptr[r]:indptr[r+1]]``).
            A ``tuple`` of length 2 is always read as CSR; pass per-row tensors as a ``list``.
        ks: cut-offs, each ``>= 1``; a cut-off above ``n_items`` ranks all items.

    Returns:
        ``{"recall@k": float, "ndcg@k": float}`` for every ``k`` in ``ks``; all values are
        ``nan`` if no row has a positive.
    """
    ks = [int(k) for k in ks]
    if not ks or min(ks) < 1:
        raise ValueError(f"topk_recall_ndcg: ks must be non-empty positive integers, got {ks}")
    scores = torch.as_tensor(scores).detach().cpu()
    if scores.dim() != 2:
        raise ValueError("topk_recall_ndcg expects a 2-D [n_users, n_items] score tensor")
    n_users, n_items = scores.shape
    mask = _positive_mask(positives, n_users, n_items)
    n_pos = mask.sum(dim=1)  # [n_users]
    keep = n_pos > 0
    result: dict[str, float] = {}
    if not bool(keep.any()):
        for k in ks:
            result[f"recall@{k}"] = float("nan")
            result[f"ndcg@{k}"] = float("nan")
        return result

    scores, mask, n_pos = scores[keep], mask[keep], n_pos[keep].to(torch.float64)
    depth = min(max(ks), n_items)
    topk_idx = torch.topk(scores, depth, dim=1).indices  # [n_kept, depth]
    hits = mask.gather(1, topk_idx).to(torch.float64)  # [n_kept, depth]
    discount = 1.0 / torch.log2(torch.arange(2, depth + 2, dtype=torch.float64))  # [depth]
    cum_hits = hits.cumsum(dim=1)
    cum_dcg = (hits * discount).cumsum(dim=1)
    cum_ideal = discount.cumsum(dim=0)  # IDCG for 1..depth positives
    for k in ks:
        kk = min(k, depth)
        recall = cum_hits[:, kk - 1] / n_pos
        ideal_len = torch.clamp(n_pos.long(), max=kk)
        ndcg = cum_dcg[:, kk - 1] / cum_ideal[ideal_len - 1]
        result[f"recall@{k}"] = float(recall.mean())
        result[f"ndcg@{k}"] = float(ndcg.mean())
    return result

