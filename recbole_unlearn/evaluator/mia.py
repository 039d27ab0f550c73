"""Membership inference on the forgotten pairs: a completeness metric.

The attack
----------
The attacker queries the model's full item scores (black box) and must tell *forgotten* pairs
(members: D_f, which the original model was trained on) from *never-seen* pairs of the same
users (non-members).  Its score for a pair (u, i) is difficulty-calibrated (Watson et al., "On
the Importance of Difficulty Calibration in Membership Inference Attacks", ICLR 2022):

    z_u(i) = (ŝ_ui − mean_j ŝ_uj) / std_j ŝ_uj          (the user's scale removed)
    a(u, i) = (z_u(i) − m_i) / σ_i                        (the item's "difficulty" removed)

where m_i, σ_i are the mean and standard deviation of z_·(i) over a fixed random sample of
reference users (up to 1,024).  A pair scores high when the model likes i for u more than it
likes i for users in general -- what training on (u, i) does.  A user whose scores are all
equal (a zero row) reveals nothing of its own: its pairs score 0 and it is no reference user.
The attack's ROC AUC is :func:`~recbole_unlearn.evaluator.metrics.membership_auc`
(Mann-Whitney), pooled over pairs.

Non-members are drawn from the distribution the members came from, so that a model that never
saw the members cannot tell the two apart (AUC 0.5 in expectation, which is where Retrain lands):

* requests of real interactions (``private``, ``users``, ``random``, ``file``): the users'
  held-out interactions (validation and test split) -- like the forgotten pairs, true positives
  of the user picked at random;
* injected requests (``noise``): random items the user never interacted with in any split.

Per user, ``k_u = min(#forgotten_u, #candidates_u)`` pairs of each class are drawn (fixed seed),
so every user weighs the same in both classes; users without candidates are left out.  1.0
means every forgotten pair still scores above every never-seen pair.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from recbole.data.interaction import Interaction

from recbole_unlearn.data.remaining import dataset_keys, pair_keys
from recbole_unlearn.evaluator.metrics import membership_auc

#: users scored at once; bounds the [chunk, n_items] score block
_CHUNK = 512
#: reference users of the item calibration
N_REFERENCE = 1024
#: a user's scores count as constant when their spread is below this share of their size
_CONSTANT = 1e-9


@dataclass(frozen=True)
class MembershipPairs:
    """Members (forgotten pairs), as many non-members per user, each array [n] int64, and the
    reference users of the calibration, [n_ref] int64."""

    member_users: np.ndarray
    member_items: np.ndarray
    nonmember_users: np.ndarray
    nonmember_items: np.ndarray
    reference_users: np.ndarray

    def __len__(self) -> int:
        return len(self.member_users)


def _by_user(users: np.ndarray) -> dict[int, np.ndarray]:
    """Row indices of each user in ``users`` ([n]), as {user: indices}."""
    order = np.argsort(users, kind="stable")
    uniq, starts = np.unique(users[order], return_index=True)
    return {int(u): idx for u, idx in zip(uniq, np.split(order, starts[1:]))}


def sample_membership_pairs(
    member_users: np.ndarray,
    member_items: np.ndarray,
    candidate_users: np.ndarray,
    candidate_items: np.ndarray,
    n_users: int,
    seed: int,
    n_reference: int = N_REFERENCE,
) -> MembershipPairs:
    """Per user, ``min(#members, #candidates)`` members and as many candidates, plus
    ``n_reference`` reference users among ids 1 … n_users − 1, all drawn with ``seed``.

    Args:
        member_users, member_items: forgotten pairs, [n_m] each.
        candidate_users, candidate_items: never-seen pairs to draw non-members from, [n_c] each.
        n_users: number of user ids of the model (id 0 is padding).
        seed: seed of the draw (same seed, same pairs).
    """
    rng = np.random.default_rng(seed)
    members, candidates = _by_user(np.asarray(member_users)), _by_user(np.asarray(candidate_users))
    pick_m, pick_c = [], []
    for user in sorted(members):
        m_idx, c_idx = members[user], candidates.get(user, np.zeros(0, dtype=np.int64))
        k = min(len(m_idx), len(c_idx))
        if k:
            pick_m.append(rng.choice(m_idx, size=k, replace=False))
            pick_c.append(rng.choice(c_idx, size=k, replace=False))
    pm = np.concatenate(pick_m) if pick_m else np.zeros(0, dtype=np.int64)
    pc = np.concatenate(pick_c) if pick_c else np.zeros(0, dtype=np.int64)
    reference = np.sort(rng.choice(np.arange(1, n_users), size=min(n_reference, n_users - 1), replace=False))
    as_long = lambda a, i: np.asarray(a, dtype=np.int64)[i]  # noqa: E731
    return MembershipPairs(as_long(member_users, pm), as_long(member_items, pm),
                           as_long(candidate_users, pc), as_long(candidate_items, pc), reference.astype(np.int64))


def unseen_items(users: np.ndarray, seen_keys: np.ndarray, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Every (user, item) pair of ``users`` whose key is not in ``seen_keys`` (padding item 0
    excluded): ([n], [n]) arrays."""
    users = np.unique(np.asarray(users, dtype=np.int64))
    seen = seen_keys[np.isin(seen_keys // n_items, users)]
    grid_u = np.repeat(users, n_items - 1)
    grid_i = np.tile(np.arange(1, n_items, dtype=np.int64), len(users))
    free = ~np.isin(pair_keys(grid_u, grid_i, n_items), seen)
    return grid_u[free], grid_i[free]


def request_membership_pairs(request, remaining, heldout: list, seed: int) -> MembershipPairs:
    """The attack's pairs for ``request`` (see the module docstring for the non-members).

    Args:
        request: the ForgetRequest (its pairs are the members).
        remaining: D_r (D_a is D_r plus the request's pairs).
        heldout: the validation and test Datasets.
        seed: seed of the draw.
    """
    n_items = remaining.item_num
    users = np.asarray(request.users, dtype=np.int64)
    forget_users = np.unique(users)
    if request.inject:
        seen = np.concatenate([dataset_keys(remaining), pair_keys(request.users, request.items, n_items)]
                              + [dataset_keys(ds) for ds in heldout])
        cand_u, cand_i = unseen_items(forget_users, seen, n_items)
    else:
        cand_u, cand_i = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
        for ds in heldout:
            u = ds.inter_feat[ds.uid_field].numpy().astype(np.int64)
            keep = np.isin(u, forget_users)
            cand_u.append(u[keep])
            cand_i.append(ds.inter_feat[ds.iid_field].numpy().astype(np.int64)[keep])
        cand_u, cand_i = np.concatenate(cand_u), np.concatenate(cand_i)
    return sample_membership_pairs(users, request.items, cand_u, cand_i, remaining.user_num, seed)


@torch.no_grad()
def _user_standardised(model, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """z_u(i) for ``users`` over the real items (id >= 1), [len(users), n_items − 1] float64,
    and which users' scores vary at all, [len(users)] bool (a constant row, e.g. ENMF's zero
    row of a deleted user, ranks nothing: its z is 0)."""
    s = model.full_sort_predict(Interaction({model.USER_ID: users})).view(len(users), -1)[:, 1:].double()
    std = s.std(dim=1, keepdim=True)
    varies = (std > _CONSTANT * s.abs().amax(dim=1, keepdim=True).clamp_min(1.0)).squeeze(1)
    return (s - s.mean(dim=1, keepdim=True)) / std.clamp_min(1e-12) * varies.unsqueeze(1), varies


@torch.no_grad()
def attack_scores(model, users: np.ndarray, items: np.ndarray, reference_users: np.ndarray) -> torch.Tensor:
    """Difficulty-calibrated scores a(u, i) of the pairs (module docstring): [n] float64.

    A user whose scores are all equal gives the attacker nothing of its own, so its pairs score
    0 (ties: half a win against any pair), and it is left out of the items' reference
    statistics; otherwise the calibration alone, −m_i / σ_i, would rank that user's items by
    how much other users like them."""
    model.eval()
    total, total_sq, n = 0.0, 0.0, 0
    ref = torch.as_tensor(reference_users, dtype=torch.long)
    for start in range(0, len(ref), _CHUNK):
        z, varies = _user_standardised(model, ref[start : start + _CHUNK])
        total, total_sq, n = total + z.sum(dim=0), total_sq + (z * z).sum(dim=0), n + int(varies.sum())
    mean = total / max(n, 1)
    std = ((total_sq - n * mean * mean) / max(n - 1, 1)).clamp_min(0).sqrt().clamp_min(1e-12)  # [n_items − 1]
    users_t = torch.as_tensor(np.asarray(users), dtype=torch.long)
    items_t = torch.as_tensor(np.asarray(items), dtype=torch.long) - 1
    uniq, row = torch.unique(users_t, return_inverse=True)
    out = torch.zeros(len(users_t), dtype=torch.float64)
    for start in range(0, len(uniq), _CHUNK):
        z, varies = _user_standardised(model, uniq[start : start + _CHUNK])
        sel = (row >= start) & (row < start + _CHUNK)
        i, local = items_t[sel], row[sel] - start
        out[sel] = (z[local, i] - mean[i]) / std[i] * varies[local]
    return out


def membership_attack_auc(model, pairs: MembershipPairs) -> float:
    """AUC of the calibrated attack on ``pairs``; ``nan`` if there are none."""
    if len(pairs) == 0:
        return float("nan")
    members = attack_scores(model, pairs.member_users, pairs.member_items, pairs.reference_users)
    nonmembers = attack_scores(model, pairs.nonmember_users, pairs.nonmember_items, pairs.reference_users)
    return membership_auc(members, nonmembers)
