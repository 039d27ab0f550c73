"""The shared half of the models trained with the BPR loss over sampled negatives.

Rendle, Freudenthaler, Gantner and Schmidt-Thieme, "BPR: Bayesian Personalized Ranking from
Implicit Feedback", UAI 2009.  A model here defines only its score embeddings,
``propagate(ego, adj)`` (the identity split for matrix factorisation, the layer mean over a
graph for LightGCN); the loss, its terms, the objective and RecBole's scoring follow:

    ℓ(u, i, j) = −log σ(ŷ_ui − ŷ_uj) + reg_weight/2 · (‖e⁰_u‖² + ‖e⁰_i‖² + ‖e⁰_j‖²),

ŷ_ui = U_u · I_i and e⁰ the ego rows of the triple; the training loss is the mean over a batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from recbole_unlearn.model.protocol import UnlearnableModel

Tensor = torch.Tensor


def bpr(u: Tensor, i: Tensor, j: Tensor) -> Tensor:
    """−log σ(u·i − u·j) per row, [B]."""
    return -F.logsigmoid((u * i).sum(-1) - (u * j).sum(-1))


class PairwiseModel(UnlearnableModel):
    """BPR loss, its per-triple terms and RecBole's scoring over ``propagate``'s outputs.

    Subclasses set ``reg_weight``, the tables ``user_embedding`` / ``item_embedding`` and
    ``restore_user_e`` / ``restore_item_e`` (RecBole's cached outputs), and define ``propagate``.
    """

    negatives_per_pair = 1
    bpr_on_outputs = True

    def _build_tables(self, dim: int, initialization) -> None:
        """The user and item tables [n, dim], initialised by ``initialization`` (a RecBole
        ``apply`` function), and RecBole's cached outputs (left out of checkpoints)."""
        self.user_embedding = torch.nn.Embedding(self.n_users, dim)
        self.item_embedding = torch.nn.Embedding(self.n_items, dim)
        self.apply(initialization)
        self.restore_user_e: Tensor | None = None
        self.restore_item_e: Tensor | None = None
        self.other_parameter_name = ["restore_user_e", "restore_item_e"]

    def propagate(self, ego: Tensor | None = None, adj=None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def outputs(self, ego: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Score embeddings of ``ego`` on the model's current structure."""
        return self.propagate(ego)

    def clear_cache(self) -> None:
        self.restore_user_e = None
        self.restore_item_e = None

    def train(self, mode: bool = True):
        self.clear_cache()
        return super().train(mode)

    def _ego_reg(self, ego: Tensor, user, pos, neg) -> Tensor:
        n = self.n_users
        return ego[user].square().sum(-1) + ego[n + pos].square().sum(-1) + ego[n + neg].square().sum(-1)

    def score_loss(self, u: Tensor, I: Tensor, interaction, history=None) -> Tensor:
        """Mean BPR term of the batch's (user, positive, negative) triples, no regulariser."""
        return bpr(u, I[interaction[self.ITEM_ID]], I[interaction[self.NEG_ITEM_ID]]).mean()

    def regulariser(self, ego: Tensor, interaction) -> Tensor:
        """reg_weight/2 · the mean over the batch's triples of their ego rows' squared norms."""
        reg = self._ego_reg(ego, interaction[self.USER_ID], interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID])
        return self.reg_weight * reg.mean() / 2

    def bpr_terms(self, user: Tensor, pos: Tensor, neg: Tensor, **propagate_kwargs) -> Tensor:
        """ℓ(u, i, j) of each triple, [B]; ``ego`` / ``adj`` replace E0 and the structure."""
        user_e, item_e = self.propagate(**propagate_kwargs)
        ego = propagate_kwargs.get("ego")
        ego = self.ego_embeddings() if ego is None else ego
        return bpr(user_e[user], item_e[pos], item_e[neg]) + self.reg_weight * self._ego_reg(ego, user, pos, neg) / 2

    def pair_terms(self, users, items, negatives=None, ego=None) -> Tensor:
        return self.bpr_terms(users, items, negatives, ego=ego)

    def objective_fn(self, users, items, negatives=None):
        """E0 ↦ the mean of ℓ over the triples (users, items, negatives)."""
        return lambda ego: self.bpr_terms(users, items, negatives, ego=ego).mean()

    def proba(self, scores: Tensor) -> Tensor:
        return torch.sigmoid(scores)

    # ---- RecBole's interface ---------------------------------------------------------------
    def calculate_loss(self, interaction) -> Tensor:
        self.clear_cache()
        return self.bpr_terms(interaction[self.USER_ID], interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]).mean()

    def predict(self, interaction) -> Tensor:
        user_e, item_e = self.propagate()
        return (user_e[interaction[self.USER_ID]] * item_e[interaction[self.ITEM_ID]]).sum(-1)

    def predict_proba(self, user: Tensor, item: Tensor) -> Tensor:
        """σ(ŷ_ui) of the given pairs, [B]."""
        user_e, item_e = self.propagate()
        return self.proba((user_e[user] * item_e[item]).sum(-1))

    def full_sort_predict(self, interaction) -> Tensor:
        if self.restore_user_e is None or self.restore_item_e is None:
            self.restore_user_e, self.restore_item_e = self.propagate()
        u = self.restore_user_e[interaction[self.USER_ID]]
        return (u @ self.restore_item_e.T).reshape(-1)
