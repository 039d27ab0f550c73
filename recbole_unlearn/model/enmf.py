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

where ỹ uses the dropped-out p_u (dropout on the positive term only, as in RecBole).
"""
from __future__ import annotations

import torch
import torch.nn as nn
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.model.init import xavier_normal_initialization
from recbole.utils import InputType


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


class ENMF(GeneralRecommender):
    """ENMF with masked history and a zero padding item; see the module docstring."""

    input_type = InputType.POINTWISE

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
        users = dataset.inter_feat[dataset.uid_field]
        items = dataset.inter_feat[dataset.iid_field]
        history, starts, lens = history_csr(users, items, self.n_users)
        self.history_items = history.to(self.device)  # [n_pairs], grouped by user
        self.history_start = starts.to(self.device)  # [n_users]
        self.history_lens = lens.to(self.device)  # [n_users]
        self._history_matrix = None

    @property
    def history_item_matrix(self) -> torch.Tensor:
        """The history as RecBole's padded matrix [n_users, max_len] (0 = padding), built lazily."""
        if self._history_matrix is None:
            users = torch.repeat_interleave(torch.arange(self.n_users, device=self.device), self.history_lens)
            self._history_matrix = history_matrix(users, self.history_items, self.n_users)[0].to(self.device)
        return self._history_matrix

    def batch_history(self, user: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The training pairs of a batch of users: (row in the batch [m], item [m])."""
        lens = self.history_lens[user]
        rows = torch.repeat_interleave(torch.arange(len(user), device=self.device), lens)
        return rows, self.history_items[self.history_start[user][rows] + _offsets(lens)]

    def trained_pair_keys(self) -> torch.Tensor:
        """Keys user * n_items + item of the pairs in the current history, [n_pairs]."""
        users = torch.repeat_interleave(torch.arange(self.n_users, device=self.device), self.history_lens)
        return users * self.n_items + self.history_items

    @property
    def h(self) -> torch.Tensor:
        """Prediction vector h, shape [d]."""
        return self.H_i.weight[0]

    def forward(self, user: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Dropped-out scores of the batch's training pairs, [m], and each pair's row in the batch."""
        p = self.dropout(self.user_embedding(user))  # [B, d]
        rows, items = self.batch_history(user)
        return (p[rows] * self.item_embedding(items)) @ self.h, rows

    def calculate_loss(self, interaction) -> torch.Tensor:
        user = interaction[self.USER_ID]
        pos, _ = self.forward(user)  # [m]
        p = self.user_embedding(user)  # [B, d]
        q = self.item_embedding.weight[1:]  # [n_items-1, d]
        hh = torch.outer(self.h, self.h)  # [d, d]
        all_items = torch.sum((p.T @ p) * (q.T @ q) * hh)
        positive = torch.sum((1 - self.negative_weight) * pos.square() - 2 * pos)
        reg = p.square().sum() + q.square().sum() * (len(user) / self.n_users)
        return self.negative_weight * all_items + positive + self.reg_weight * reg

    def predict(self, interaction) -> torch.Tensor:
        """Scores ŷ_ui of the given (user, item) pairs, [B]."""
        p = self.user_embedding(interaction[self.USER_ID])
        q = self.item_embedding(interaction[self.ITEM_ID])
        return (p * q) @ self.h

    def predict_proba(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        """ŷ_ui clipped to [0, 1]: the squared loss regresses positives towards 1, [B]."""
        p = self.user_embedding(user)
        q = self.item_embedding(item)
        return ((p * q) @ self.h).clamp(0.0, 1.0)

    def full_sort_predict(self, interaction) -> torch.Tensor:
        """Scores of every item for each user, flattened [B * n_items]."""
        p = self.user_embedding(interaction[self.USER_ID])  # [B, d]
        return ((p * self.h) @ self.item_embedding.weight.T).reshape(-1)
