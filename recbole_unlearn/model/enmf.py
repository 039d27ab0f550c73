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


def history_matrix(users: torch.Tensor, items: torch.Tensor, n_users: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Items of each user in ascending order, zero-padded: ([n_users, max_len], lens [n_users]).

    Deterministic and RNG-free (RecBole's ``Dataset.history_item_matrix`` shuffles with the
    global RNG, which would make rebuilding the history change the training that follows).
    """
    order = torch.argsort(users * (int(items.max()) + 1 if len(items) else 1) + items)
    users, items = users[order], items[order]
    lens = torch.bincount(users, minlength=n_users)
    starts = torch.cumsum(lens, 0) - lens
    col = torch.arange(len(users)) - starts[users]
    matrix = torch.zeros(n_users, max(int(lens.max()) if len(lens) else 0, 1), dtype=torch.long)
    matrix[users, col] = items
    return matrix, lens


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
        matrix, lens = history_matrix(users, items, self.n_users)
        self.history_item_matrix = matrix.to(self.device)  # [n_users, max_len], 0 = padding
        self.history_lens = lens.to(self.device)  # [n_users]

    def trained_pair_keys(self) -> torch.Tensor:
        """Keys user * n_items + item of the pairs in the current history, [n_pairs]."""
        users = torch.arange(self.n_users, device=self.device).unsqueeze(1)
        mask = self.history_item_matrix > 0
        return (users * self.n_items + self.history_item_matrix)[mask]

    @property
    def h(self) -> torch.Tensor:
        """Prediction vector h, shape [d]."""
        return self.H_i.weight[0]

    def _history(self, user: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        items = self.history_item_matrix[user]  # [B, L]
        return items, items > 0

    def forward(self, user: torch.Tensor) -> torch.Tensor:
        """Dropped-out scores of each user's history items, [B, max_len] (0 at padding)."""
        p = self.dropout(self.user_embedding(user))  # [B, d]
        items, mask = self._history(user)
        q = self.item_embedding(items)  # [B, L, d]
        score = self.H_i(p.unsqueeze(1) * q).squeeze(-1)  # [B, L]
        return score * mask

    def calculate_loss(self, interaction) -> torch.Tensor:
        user = interaction[self.USER_ID]
        pos = self.forward(user)  # [B, L]
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
