"""ENMF: efficient non-sampling neural matrix factorisation, rebuilt for unlearning.

Chen et al., "Efficient Neural Matrix Factorization without Sampling for Recommendation",
ACM TOIS 2020.  Same class name as RecBole's ``ENMF`` so RecBole picks its user-batch loader.

Differences from RecBole 1.2.1's ENMF, all needed for a well-defined objective:
padded history slots are masked, the item padding row 0 stays at zero (it is left out of the
all-items term and the regulariser, so it never receives a gradient), the L2 term is squared,
and the training history can be replaced (``set_train_data``) after unlearning.

Objective (c = ``negative_weight``, ρ = ``dropout_prob``, h = prediction vector,
ŷ_ui = p_uᵀ (h ⊙ q_i)), summed over the users of a batch B:

    L_B = c Σ_{u∈B} Σ_{i≥1} ŷ_ui² + Σ_{u∈B} Σ_{i∈R_u} [(1−c) ỹ_ui² − 2 ỹ_ui]
          + λ (Σ_{u∈B} ‖p_u‖² + |B|/n_users · ‖Q‖²)

where ỹ uses the dropped-out p_u (dropout on the positive term only, as in RecBole).  In the
protocol's terms (:mod:`recbole_unlearn.model.protocol`) the score embeddings are
(P, h ⊙ Q); unlearners see the objective with dropout in expectation,
E[ỹ²] = ŷ² + ρ/(1−ρ)·Σ_k (p_k h_k q_k)², and the closed-form row blocks (``exact_blocks``).
"""
from __future__ import annotations

import torch
import torch.nn as nn
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.model.init import xavier_normal_initialization
from recbole.utils import InputType

from recbole_unlearn.model.enmf_blocks import JITTER, ENMFBlocks
from recbole_unlearn.model.protocol import UnlearnableModel
from recbole_unlearn.numerics import true_index


def history_csr(users: torch.Tensor, items: torch.Tensor, n_users: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each user's items in ascending order, concatenated: (items [m], starts [n_users], lens [n_users]).

    Deterministic and RNG-free (RecBole's ``Dataset.history_item_matrix`` shuffles with the
    global RNG, which would make rebuilding the history change the training that follows).
    """
    users, items = users.long(), items.long()
    order = torch.argsort(users * (int(items.max()) + 1 if len(items) else 1) + items)
    lens = torch.bincount(users, minlength=n_users)
    return items[order], torch.cumsum(lens, 0) - lens, lens


def history_matrix(users: torch.Tensor, items: torch.Tensor, n_users: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The same history as RecBole's padded matrix: ([n_users, max_len], 0 = padding; lens [n_users])."""
    history, _, lens = history_csr(users, items, n_users)
    matrix = torch.zeros(n_users, max(int(lens.max()) if len(lens) else 0, 1), dtype=torch.long)
    rows = torch.repeat_interleave(torch.arange(n_users), lens)
    matrix[rows, _offsets(lens)] = history
    return matrix, lens


def _offsets(lens: torch.Tensor) -> torch.Tensor:
    """0, 1, ..., lens[0]-1, 0, 1, ..., lens[1]-1, ... as one tensor [lens.sum()]."""
    total = int(lens.sum())
    return torch.arange(total, device=lens.device) - torch.repeat_interleave(torch.cumsum(lens, 0) - lens, lens)


class PairHistory:
    """Each user's training items, grouped by user (``history_csr``): what ENMF's loss needs of
    a training set beyond a batch of users."""

    def __init__(self, users: torch.Tensor, items: torch.Tensor, n_users: int, device=None):
        history, starts, lens = history_csr(users, items, n_users)
        self.items, self.starts, self.lens = history.to(device), starts.to(device), lens.to(device)

    @classmethod
    def of(cls, dataset, n_users: int, device=None) -> "PairHistory":
        inter = dataset.inter_feat
        return cls(inter[dataset.uid_field], inter[dataset.iid_field], n_users, device)

    def without(self, users: torch.Tensor, items: torch.Tensor) -> "PairHistory":
        """This history less the pairs (``users``, ``items``) [m], touching only those users'
        segments (the same result as rebuilding it from the remaining pairs)."""
        out = PairHistory.__new__(PairHistory)
        users, items = users.long().to(self.lens.device), items.long().to(self.lens.device)
        touched = torch.unique(users)
        lens = self.lens[touched]
        owner = torch.repeat_interleave(touched, lens)  # the entries of the touched users' segments
        entries = torch.repeat_interleave(self.starts[touched], lens) + _offsets(lens)
        n_items = int(max(int(self.items.max()) if len(self.items) else 0, int(items.max()) if len(items) else 0)) + 1
        dropped = torch.isin(owner * n_items + self.items[entries], users * n_items + items)
        keep = torch.ones(len(self.items), dtype=torch.bool, device=self.items.device)
        keep[entries[dropped]] = False
        out.items = self.items.index_select(0, true_index(keep))
        out.lens = self.lens - torch.bincount(owner[dropped], minlength=len(self.lens))
        out.starts = torch.cumsum(out.lens, 0) - out.lens
        return out

    def batch(self, user: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The training pairs of a batch of users: (row in the batch [m], item [m])."""
        lens = self.lens[user]
        rows = torch.repeat_interleave(torch.arange(len(user), device=user.device), lens)
        return rows, self.items[self.starts[user][rows] + _offsets(lens)]


class ENMF(UnlearnableModel, GeneralRecommender):
    """ENMF with masked history and a zero padding item; see the module docstring."""

    input_type = InputType.POINTWISE
    negatives_per_pair = 0
    influence_damping, influence_cg_tol = 10.0, 0.01  # a worse-conditioned system than BPR's

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.embedding_size: int = config["embedding_size"]
        self.dropout_prob: float = config["dropout_prob"]
        self.reg_weight: float = config["reg_weight"]
        self.negative_weight: float = config["negative_weight"]
        self.user_embedding = nn.Embedding(self.n_users, self.embedding_size, padding_idx=0)
        self.item_embedding = nn.Embedding(self.n_items, self.embedding_size, padding_idx=0)
        self.H_i = nn.Linear(self.embedding_size, 1, bias=False)
        self.dropout = nn.Dropout(self.dropout_prob)
        self.apply(xavier_normal_initialization)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()
            self.user_embedding.weight[0].zero_()
        self.set_train_data(dataset)

    def set_train_data(self, dataset) -> None:
        """Use ``dataset``'s interactions as the positive history (e.g. D_r after unlearning)."""
        self.history = PairHistory.of(dataset, self.n_users, self.device)
        self._history_matrix = None

    def drop_pairs(self, remaining, users: torch.Tensor, items: torch.Tensor) -> None:
        """The history less the request's pairs, updated in the forgetting users' segments only;
        rebuilt from ``remaining`` when the counts disagree (the history was not D_a's)."""
        history = self.history.without(users, items)
        if int(history.lens.sum()) != len(remaining.inter_feat):
            history = PairHistory.of(remaining, self.n_users, self.device)
        self.history = history
        self._history_matrix = None

    def rows_without_pairs(self, users: torch.Tensor, initial) -> torch.Tensor:
        """Zeros [k, d]: a user without positives keeps only the whole-data term c θᵀGθ and the
        regulariser λ‖θ‖², whose minimiser is 0, and a retrain (every user is in its batches)
        shrinks the row towards it (the tiny data's test user: ‖θ‖ 1.52 at the start, 0.01
        after 40 epochs).  ``initial`` is not called."""
        return torch.zeros(len(users), self.embedding_size, device=self.device)

    def history_of(self, dataset) -> PairHistory:
        return PairHistory.of(dataset, self.n_users, self.device)

    @property
    def history_lens(self) -> torch.Tensor:
        """Training items per user, [n_users]."""
        return self.history.lens

    @property
    def history_item_matrix(self) -> torch.Tensor:
        """The history as RecBole's padded matrix [n_users, max_len] (0 = padding), built lazily."""
        if self._history_matrix is None:
            users = torch.repeat_interleave(torch.arange(self.n_users, device=self.device), self.history.lens)
            self._history_matrix = history_matrix(users, self.history.items, self.n_users)[0].to(self.device)
        return self._history_matrix

    def trained_pair_keys(self) -> torch.Tensor:
        """Keys user * n_items + item of the pairs in the current history, [n_pairs]."""
        users = torch.repeat_interleave(torch.arange(self.n_users, device=self.device), self.history.lens)
        return users * self.n_items + self.history.items

    @property
    def h(self) -> torch.Tensor:
        """Prediction vector h, shape [d]."""
        return self.H_i.weight[0]

    # ---- the protocol ----------------------------------------------------------------------
    def outputs(self, ego: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Score embeddings (P [n_users, d], h ⊙ Q [n_items, d])."""
        if ego is None:
            return self.user_embedding.weight, self.item_embedding.weight * self.h
        return ego[: self.n_users], ego[self.n_users :] * self.h

    @torch.no_grad()
    def final_embeddings(self) -> torch.Tensor:
        """[P; Q] ⊙ h: withdrawing a neighbour lowers ŷ_ui = (h ⊙ p_u)·q_i from both ends."""
        return self.ego_embeddings() * self.h

    def score_loss(self, u: torch.Tensor, I: torch.Tensor, interaction, history: PairHistory | None = None):
        """c Σ_{u∈B} Σ_{i≥1} ŷ_ui² + Σ_{(u,i)∈R, u∈B} [(1−c) ỹ_ui² − 2 ỹ_ui], ỹ with dropout on u."""
        rows, items = (history or self.history).batch(interaction[self.USER_ID])
        pos = (self.dropout(u)[rows] * I[items]).sum(-1)  # [m]
        x = I[1:]
        all_items = torch.sum((u.T @ u) * (x.T @ x))
        return self.negative_weight * all_items + torch.sum((1 - self.negative_weight) * pos.square() - 2 * pos)

    def regulariser(self, ego: torch.Tensor, interaction) -> torch.Tensor:
        """λ (Σ_{u∈B} ‖p_u‖² + |B|/n_users · ‖Q‖²), the item padding row left out."""
        user = interaction[self.USER_ID]
        share = len(user) / self.n_users
        return self.reg_weight * (ego[user].square().sum() + ego[self.n_users + 1 :].square().sum() * share)

    def pair_terms(self, users, items, negatives=None, ego=None) -> torch.Tensor:
        """(1−c)·E[ỹ_ui²] − 2ŷ_ui of each pair (dropout in expectation), [m]."""
        P, X = self.outputs(ego)
        x = P[users] * X[items]
        y = x.sum(-1)
        variance = self.dropout_prob / (1.0 - self.dropout_prob)
        return (1 - self.negative_weight) * (y.square() + variance * x.square().sum(-1)) - 2 * y

    def objective_fn(self, users, items, negatives=None, dense: bool | None = None):
        """E0 ↦ F, the objective on the pairs with dropout in expectation (the module docstring,
        summed).  When the [n_users, n_items] score matrix has at most 32 entries per pair
        (``dense`` None) it is evaluated through that matrix (dense products, faster double
        backprop); ``dense`` True / False forces one form."""
        users, items = torch.as_tensor(users).long(), torch.as_tensor(items).long()
        c, lam = self.negative_weight, self.reg_weight
        variance = self.dropout_prob / (1.0 - self.dropout_prob)
        mask = None
        if dense or (dense is None and self.n_users * self.n_items <= 32 * len(users)):
            mask = torch.zeros(self.n_users, self.n_items, dtype=self.user_embedding.weight.dtype)
            mask[users, items] = 1.0
            mask = mask[:, 1:]  # item 0 is padding

        def objective(ego: torch.Tensor) -> torch.Tensor:
            P, X = self.outputs(ego)
            x1 = X[1:]
            reg = lam * (P.square().sum() + ego[self.n_users + 1 :].square().sum())
            if mask is None:
                return c * torch.sum((P.T @ P) * (x1.T @ x1)) + self.pair_terms(users, items, ego=ego).sum() + reg
            y = P @ x1.T
            spread = ((mask @ x1.square()) * P.square()).sum()
            return ((c + (1 - c) * mask) * y.square() - 2 * mask * y).sum() + (1 - c) * variance * spread + reg

        return objective

    def row_objective(self, users, items, negatives, side: str, rows: torch.Tensor):
        """F as a function of the ``side`` rows θ [len(rows), d], written from those rows' own
        terms only (the others are constant): c θ G θᵀ + Σ_pairs [(1−c)E[ỹ²] − 2ŷ] + λ‖θ‖²,
        G the other side's Gram matrix (hhᵀ ⊙ QᵀQ or hhᵀ ⊙ PᵀP)."""
        blocks = ENMFBlocks(self, users, items)
        own, other = (blocks.users, blocks.items) if side == "user" else (blocks.items, blocks.users)
        vectors = (blocks.x() if side == "user" else blocks.z()).detach()
        gram = (blocks.user_gram() if side == "user" else blocks.item_gram()).detach()
        position = torch.full((int(max(own.max(), rows.max())) + 1,), -1)
        position[rows] = torch.arange(len(rows))
        pos = position[own]
        keep = pos >= 0
        pos, v = pos[keep], vectors[other[keep]]
        c, r, lam = blocks.c, blocks.r, blocks.lam + JITTER

        def loss(theta: torch.Tensor) -> torch.Tensor:
            t = theta[pos]
            y = (t * v).sum(1)
            positive = (1 - c) * (y.square() + r * (t.square() * v.square()).sum(1)) - 2 * y
            return c * ((theta @ gram) * theta).sum() + positive.sum() + lam * theta.square().sum()

        return loss

    def exact_blocks(self, users: torch.Tensor, items: torch.Tensor) -> ENMFBlocks:
        """The closed-form user and item block systems on the pairs (``ENMFBlocks``)."""
        return ENMFBlocks(self, users, items)

    def proba(self, scores: torch.Tensor) -> torch.Tensor:
        """ŷ clipped to [0, 1]: the squared loss regresses positives towards 1."""
        return scores.clamp(0.0, 1.0)

    # ---- RecBole's interface ---------------------------------------------------------------
    def calculate_loss(self, interaction) -> torch.Tensor:
        return self.training_loss(interaction)

    def predict(self, interaction) -> torch.Tensor:
        """Scores ŷ_ui of the given (user, item) pairs, [B]."""
        p = self.user_embedding(interaction[self.USER_ID])
        q = self.item_embedding(interaction[self.ITEM_ID])
        return (p * q) @ self.h

    def predict_proba(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        """ŷ_ui clipped to [0, 1], [B]."""
        p = self.user_embedding(user)
        q = self.item_embedding(item)
        return self.proba((p * q) @ self.h)

    def full_sort_predict(self, interaction) -> torch.Tensor:
        """Scores of every item for each user, flattened [B * n_items]."""
        p = self.user_embedding(interaction[self.USER_ID])  # [B, d]
        return ((p * self.h) @ self.item_embedding.weight.T).reshape(-1)
