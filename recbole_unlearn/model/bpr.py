"""BPR: matrix factorisation trained with the BPR loss (the MF backbone of the IFRU paper).

Rendle, Freudenthaler, Gantner and Schmidt-Thieme, "BPR: Bayesian Personalized Ranking from
Implicit Feedback", UAI 2009.  Same class name as RecBole's ``BPR`` so its pairwise loader and
negative sampling apply by name.  Scores are ŷ_ui = p_u · q_i; the loss (``model.pairwise``) is
−log σ(ŷ_ui − ŷ_uj) with an L2 term on the triple's rows (``reg_weight``; RecBole's BPR has
none).  There is no graph: the score embeddings are the tables themselves, and the training
structure that ``set_train_data`` replaces is only the record of the trained pairs.
"""
from __future__ import annotations

import torch
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.model.init import xavier_normal_initialization
from recbole.utils import InputType

from recbole_unlearn.model.pairwise import PairwiseModel


class BPR(PairwiseModel, GeneralRecommender):
    """Matrix factorisation with the BPR loss; see the module docstring."""

    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.embedding_size: int = config["embedding_size"]
        self.reg_weight: float = config["reg_weight"]
        self._build_tables(self.embedding_size, xavier_normal_initialization)
        self.set_train_data(dataset)

    def set_train_data(self, dataset) -> None:
        """Record ``dataset``'s pairs as the trained ones (e.g. D_r after unlearning)."""
        inter = dataset.inter_feat
        users, items = inter[dataset.uid_field].long(), inter[dataset.iid_field].long()
        self._pair_keys = torch.unique(users * self.n_items + items).to(self.device)
        self.clear_cache()

    def trained_pair_keys(self) -> torch.Tensor:
        """Keys user * n_items + item of the trained pairs, [n_pairs]."""
        return self._pair_keys

    def propagate(self, ego: torch.Tensor | None = None, adj=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(P [n_users, d], Q [n_items, d]) of ``ego`` (the tables by default); no graph."""
        e = self.ego_embeddings() if ego is None else ego
        return e[: self.n_users], e[self.n_users :]
