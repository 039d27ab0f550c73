"""The remaining data D_r = D_a \\ D_f, built in memory so it shares D_a's id maps.

Rebuilding a RecBole Dataset from a filtered file can renumber users and items (ids come from
``pd.factorize`` in order of appearance); ``Dataset.copy`` with a filtered ``inter_feat`` keeps
every id map, ``user_num`` and ``item_num``, even for users left with no interaction.
"""
from __future__ import annotations

import numpy as np
import torch
from recbole.data.interaction import Interaction, cat_interactions
from recbole.data.utils import create_samplers, get_dataloader
from recbole.sampler import Sampler

from recbole_unlearn.numerics import true_index


def pair_keys(users, items, n_items: int) -> np.ndarray:
    """One int64 key per (user, item) pair: user * n_items + item, shape [n]."""
    return np.asarray(users, dtype=np.int64) * n_items + np.asarray(items, dtype=np.int64)


def pairs(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """(users [n_inter], items [n_inter]) internal ids of a dataset's interactions, int64."""
    inter = dataset.inter_feat
    return inter[dataset.uid_field].long(), inter[dataset.iid_field].long()


def users_without_pairs(dataset, users: torch.Tensor) -> torch.Tensor:
    """The ``users`` [k] that have no interaction in ``dataset`` (e.g. deleted whole from D_r), [≤ k]."""
    return users[~torch.isin(users, pairs(dataset)[0])]


def dataset_keys(dataset) -> np.ndarray:
    """Pair keys of a dataset's interactions, [n_inter]."""
    users, items = pairs(dataset)
    return pair_keys(users.numpy(), items.numpy(), dataset.item_num)


def select_rows(dataset, rows):
    """``dataset`` restricted to ``rows``: a boolean mask [n_inter] or ascending indices
    (``Dataset.copy`` keeps the id maps).

    Gathers the columns directly: ``Interaction.__getitem__`` turns a tensor index into a
    Python list first, which is ~50x slower on ml-100k's 80k rows; a mask becomes indices once.
    """
    index = torch.as_tensor(rows)
    index = true_index(index) if index.dtype == torch.bool else index.long()
    return dataset.copy(Interaction({k: v.index_select(0, index) for k, v in dataset.inter_feat.interaction.items()}))


def pair_rows(dataset, users, items) -> tuple[np.ndarray, np.ndarray]:
    """Where the pairs (``users``, ``items``) [n] sit among ``dataset``'s interactions:
    (rows [k] of the interactions that are one of the pairs, found [n] bool: whether each pair
    is an interaction).  Only the given users' rows are compared."""
    du, di = (x.numpy() for x in pairs(dataset))
    requested = np.zeros(dataset.user_num, dtype=bool)
    requested[np.asarray(users, dtype=np.int64)] = True
    candidates = np.flatnonzero(requested[du])  # only these users' rows can match
    wanted = pair_keys(users, items, dataset.item_num)
    there = pair_keys(du[candidates], di[candidates], dataset.item_num)
    return candidates[np.isin(there, wanted)], np.isin(wanted, there)


def remaining_dataset(train, request) -> object:
    """D_r: ``train`` without the request's pairs (same id maps, same user/item counts)."""
    keep = np.ones(len(train.inter_feat), dtype=bool)
    keep[pair_rows(train, request.users, request.items)[0]] = False
    return select_rows(train, keep)


def inject_pairs(train, users: np.ndarray, items: np.ndarray):
    """``train`` plus new (user, item) rows; other columns are filled with zeros.

    Used by the ``noise`` scenario: false positives are added to D_a before the original model
    is trained, and the request then deletes exactly them.
    """
    inter = train.inter_feat
    n = len(users)
    extra = {}
    for field in inter.columns:
        column = inter[field]
        extra[field] = torch.zeros((n,) + tuple(column.shape[1:]), dtype=column.dtype)
    extra[train.uid_field] = torch.as_tensor(users, dtype=inter[train.uid_field].dtype)
    extra[train.iid_field] = torch.as_tensor(items, dtype=inter[train.iid_field].dtype)
    return train.copy(cat_interactions([inter, Interaction(extra)]))


def train_loader(config, train, shuffle: bool | None = None):
    """The training loader RecBole would build for this model, over ``train`` only.

    Negatives (when the model samples them) avoid ``train``'s own positives.
    """
    neg = config["train_neg_sample_args"]
    sampler = None
    if neg["distribution"] != "none":
        sampler = Sampler(["train"], [train], neg["distribution"], neg["alpha"]).set_phase("train")
    shuffle = config["shuffle"] if shuffle is None else shuffle
    return get_dataloader(config, "train")(config, train, sampler, shuffle=shuffle)


class RemainingLoaders:
    """The validation and test loaders whose history is ``train`` (D_r after a request, D_a
    before one), each built on first use: a request that is not evaluated and trains nothing (a platform's request with
    ``evaluate: False``) never pays for them (about 2 s on ml-1m)."""

    def __init__(self, config, train, valid, test):
        self.config, self.train, self.valid_data, self.test_data = config, train, valid, test
        self._samplers = None
        self._loaders: dict = {}

    def _loader(self, phase: str):
        if phase not in self._loaders:
            if self._samplers is None:
                self._samplers = create_samplers(self.config, self.train, [self.train, self.valid_data, self.test_data])
            data, sampler = ((self.valid_data, self._samplers[1]) if phase == "valid"
                             else (self.test_data, self._samplers[2]))
            self._loaders[phase] = get_dataloader(self.config, phase)(self.config, data, sampler, shuffle=False)
        return self._loaders[phase]

    @property
    def valid(self):
        """Validation loader, history D_r (early stopping)."""
        return self._loader("valid")

    @property
    def test(self):
        """Test loader, history D_r (evaluation of every row)."""
        return self._loader("test")
