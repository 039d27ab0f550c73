"""Shared machinery of the shard-based exact unlearners (SISA, RecEraser).

Bourtoule et al., "Machine Unlearning", IEEE S&P 2021 (SISA); Chen et al., "Recommendation
Unlearning", WWW 2022 (RecEraser).  D_a is split into K disjoint shards, one fresh sub-model
of the run's model class is trained per shard, and an aggregation turns the K sub-models into
one recommender.  A request retrains (from scratch, on the shard's remaining data) only the
shards holding forgotten pairs, so no forgotten pair ever influenced a retrained sub-model.

Every sub-model exposes *score embeddings* (users [n_users, d], items [n_items, d]) whose dot
product is its score (the model protocol's ``outputs``: ENMF gives (p_u, h ⊙ q_i), LightGCN its
layer-mean outputs) and its link from scores to probabilities (``proba``).  The
ensemble also records which users and items each shard holds data for ("knows"): a sub-model's
row of a user or item it never saw is initialisation noise, so aggregations ignore it.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from time import perf_counter
from typing import ClassVar

import numpy as np
import torch
import torch.nn as nn
from recbole.data.dataloader.abstract_dataloader import AbstractDataLoader
from recbole.data.dataloader.user_dataloader import UserDataLoader
from recbole.data.interaction import Interaction
from recbole.data.utils import get_dataloader
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.utils import InputType, init_seed

from recbole_unlearn import distributed
from recbole_unlearn.checkpoint import load_checkpoint, save_checkpoint
from recbole_unlearn.data.remaining import RemainingLoaders, dataset_keys, pair_keys, select_rows, train_loader
from recbole_unlearn.data.ledger import data_fingerprint
from recbole_unlearn.errors import UnlearnInputError
from recbole_unlearn.model.protocol import require
from recbole_unlearn.unlearner.base import Params, Unlearner

logger = logging.getLogger(__name__)


def score_embeddings(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(users [n_users, d], items [n_items, d]) with score(u, i) = ⟨users[u], items[i]⟩."""
    return require(model, "shard-based unlearning").outputs()


class ActiveUserDataLoader(UserDataLoader):
    """RecBole's user-batch loader (ENMF) over the users that have data in ``dataset`` only,
    so a shard's epoch costs in proportion to its users, not to every user of D_a."""

    def __init__(self, config, dataset, sampler=None, shuffle: bool = True):
        self.logger = logging.getLogger(__name__)
        self.uid_field = dataset.uid_field
        users = torch.unique(dataset.inter_feat[self.uid_field])
        self.user_list = Interaction({self.uid_field: users})
        self.sample_size = len(self.user_list)
        AbstractDataLoader.__init__(self, config, dataset, sampler, shuffle=True)


def split_dataset(dataset, shard_of: np.ndarray, n_shards: int) -> list:
    """``dataset`` cut into ``n_shards`` datasets by the shard id of each row (row order kept)."""
    order = np.argsort(shard_of, kind="stable")
    bounds = np.searchsorted(shard_of[order], np.arange(n_shards + 1))
    return [select_rows(dataset, order[bounds[k]:bounds[k + 1]]) for k in range(n_shards)]


def shard_train_loader(config, data):
    """The model's training loader over one shard (active users only for ENMF)."""
    if get_dataloader(config, "train") is UserDataLoader:
        return ActiveUserDataLoader(config, data)
    return train_loader(config, data)


class ShardEnsemble(GeneralRecommender):
    """K trained sub-models behind one model interface (subclasses define the aggregation).

    The partition is stored as buffers (``partition_keys`` [n] sorted pair keys of D_a and
    ``partition_shards`` [n] their shard ids), so ``state_dict()`` is self-contained.
    """

    input_type = InputType.POINTWISE
    is_ensemble = True

    def __init__(self, config, dataset, keys: np.ndarray, shard_of: np.ndarray, submodels: list):
        super().__init__(config, dataset)
        order = np.argsort(keys, kind="stable")
        self.register_buffer("partition_keys", torch.as_tensor(np.asarray(keys)[order], dtype=torch.long))
        self.register_buffer("partition_shards", torch.as_tensor(np.asarray(shard_of)[order], dtype=torch.long))
        self.n_shards = len(submodels)
        self.train_data = None
        self.shards = nn.ModuleList(submodels)
        self.shards.requires_grad_(False)
        self._cache: dict = {}
        self.set_train_data(dataset)

    # ---- data ----------------------------------------------------------------------------
    def shard_ids(self, users, items) -> np.ndarray:
        """Shard of each (user, item) pair of D_a, [n] (raises on a pair outside the partition)."""
        keys = torch.as_tensor(pair_keys(users, items, self.n_items))
        pos = torch.searchsorted(self.partition_keys, keys).clamp(max=len(self.partition_keys) - 1)
        if len(keys) and not bool((self.partition_keys[pos] == keys).all()):
            raise UnlearnInputError("the request holds pairs that are not in the sharded training data")
        return self.partition_shards[pos].numpy()

    def split(self, dataset) -> list:
        """``dataset`` restricted to each shard (``Dataset.copy``: same id maps), K datasets."""
        if dataset is self.train_data:
            return self.parts
        inter = dataset.inter_feat
        shard = self.shard_ids(inter[dataset.uid_field].numpy(), inter[dataset.iid_field].numpy())
        return split_dataset(dataset, shard, self.n_shards)

    def drop_pairs(self, remaining, users, items) -> None:
        """D_r after a request: each sub-model gets its shard of ``remaining``."""
        self.set_train_data(remaining)

    def set_train_data(self, dataset) -> None:
        """Make ``dataset`` (e.g. D_r) the ensemble's data: each sub-model gets its shard of it."""
        self.parts = self.split(dataset)
        self.train_data = dataset
        knows_user, knows_item = [], []
        for model, part in zip(self.shards, self.parts):
            model.set_train_data(part)
            inter = part.inter_feat
            knows_user.append(torch.bincount(inter[part.uid_field], minlength=self.n_users) > 0)
            knows_item.append(torch.bincount(inter[part.iid_field], minlength=self.n_items) > 0)
        self.knows_user = torch.stack(knows_user, 1)  # [n_users, K]
        self.knows_item = torch.stack(knows_item, 1)  # [n_items, K]
        self.clear_cache()

    def keep_partition(self, keys: np.ndarray) -> None:
        """Drop every pair not in ``keys`` from the stored partition (after a request, so the
        ensemble's state no longer names the forgotten pairs)."""
        keep = torch.isin(self.partition_keys, torch.as_tensor(keys, dtype=torch.long))
        self.partition_keys = self.partition_keys[keep]
        self.partition_shards = self.partition_shards[keep]

    def replace_shard(self, k: int, model: nn.Module) -> None:
        """Put a (re)trained sub-model in slot ``k``."""
        model.requires_grad_(False)
        self.shards[k] = model
        self.clear_cache()

    def trained_pair_keys(self) -> torch.Tensor:
        """Keys of every pair a sub-model (or the aggregation) was trained on, [n_pairs]."""
        keys = [m.trained_pair_keys() for m in self.shards]
        keys.append(torch.as_tensor(dataset_keys(self.train_data)))
        return torch.unique(torch.cat(keys))

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        out = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self.clear_cache()
        return out

    # ---- embeddings ------------------------------------------------------------------------
    def clear_cache(self) -> None:
        """Forget cached embeddings (after the data or a sub-model changed)."""
        self._cache.clear()

    @torch.no_grad()
    def shard_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Score embeddings of every sub-model: (users [n_users, K, d], items [n_items, K, d])."""
        if "shards" not in self._cache:
            outs = [score_embeddings(m) for m in self.shards]
            self._cache["shards"] = (torch.stack([u for u, _ in outs], 1), torch.stack([i for _, i in outs], 1))
        return self._cache["shards"]

    @staticmethod
    def known_weights(knows: torch.Tensor) -> torch.Tensor:
        """Uniform weights over the shards that know each row (all shards if none does), [N, K]."""
        w = knows.float()
        w[w.sum(1) == 0] = 1.0
        return w / w.sum(1, keepdim=True)

    def proba(self, scores: torch.Tensor) -> torch.Tensor:
        return self.shards[0].proba(scores)

    def calculate_loss(self, interaction) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no trainable aggregation")


@dataclass(frozen=True)
class ShardParams(Params):
    """``n_shards``: K; ``shard_dir``: where pretrained ensembles are kept (None:
    ``<checkpoint_dir>/shards``); ``shard_reuse``: load a saved ensemble whose data fingerprint
    and settings match instead of training one."""

    n_shards: int = 10
    shard_dir: str | None = None
    shard_reuse: bool = True


#: config keys that change how a sub-model trains: a saved ensemble is reused only if they match
TRAINING_KEYS = (
    "seed", "reproducibility", "embedding_size", "learning_rate", "learner", "weight_decay",
    "train_batch_size", "epochs", "eval_step", "stopping_step", "valid_metric", "dropout_prob",
    "reg_weight", "negative_weight", "n_layers", "train_neg_sample_args", "eval_args",
)


class ShardedUnlearner(Unlearner):
    """Exact unlearning with a sharded ensemble: subclasses choose the partition and the
    aggregation (``ensemble_class``, :meth:`refresh_aggregator`).

    Per-shard training: a fresh sub-model seeded with ``seed + k`` trained on shard k with the
    model's own config and RecBole's loop; early stopping on the validation interactions of the
    shard's users, ranked against the shard's own data (the sub-model's whole history).  The
    same procedure serves pretraining and retraining, so a retrained shard equals the shard a
    pretraining on D_r (with the same partition) would have produced.  In a process group the
    shards to train are dealt out to the ranks in turn and each trained shard is then copied to
    every rank: the seeding per shard makes the ensemble the same, tensor for tensor, as one
    process's.
    """

    params_class = ShardParams
    ensemble_class: ClassVar[type] = ShardEnsemble
    has_aggregator: ClassVar[bool] = False
    accepts_ensemble = True
    resets_deleted_users = False  # a shard holding the user is retrained from its own initial values

    @classmethod
    def restore_ensemble(cls, config, train, state: dict) -> ShardEnsemble:
        """The ensemble saved in ``state`` (an unlearned checkpoint of this method) on ``train``,
        the checkpoint's remaining data: the start of the next request of a chain."""
        if "partition_keys" not in state:
            raise UnlearnInputError(f"the checkpoint is not a {cls.__name__} ensemble")
        keys, shards = state["partition_keys"].numpy(), state["partition_shards"].numpy()
        n_shards = len({k.split(".")[1] for k in state if k.startswith("shards.")})
        ensemble = None
        try:
            row_shards = shards[np.searchsorted(keys, dataset_keys(train)).clip(max=len(keys) - 1)]
            parts = split_dataset(train, row_shards, n_shards)
            models = [config.model_class(config, part) for part in parts]
            ensemble = cls.ensemble_class(config, train, keys, shards, models)
            ensemble.load_state_dict(state)
        except (RuntimeError, IndexError, UnlearnInputError) as e:
            raise UnlearnInputError(f"the checkpoint's {cls.__name__} ensemble does not fit this data: {e}") from None
        return ensemble

    def settings_check(self, task) -> None:
        """A chained ensemble must be this method's."""
        if not isinstance(task.original, self.ensemble_class):
            raise UnlearnInputError(
                f"the checkpoint holds a {type(task.original).__name__}, not a {type(self).__name__} ensemble"
            )

    def partition(self, task) -> np.ndarray:
        """Shard id (0..K-1) of each interaction of ``task.train`` (D_a), [n_inter]."""
        raise NotImplementedError

    def refresh_aggregator(self, ensemble: ShardEnsemble, data, valid) -> None:
        """Train the aggregation from scratch on ``data`` (nothing for a fixed aggregation)."""

    def settings_extra(self, task) -> dict:
        """What else the pretrained ensemble depends on (compared before reusing a saved one)."""
        return {}

    # ---- pretraining: build (or load) the ensemble on D_a ----------------------------------
    def pretrain(self, task) -> bool:
        if getattr(task.original, "is_ensemble", False):  # the next request of a chain
            self.settings_check(task)
            self.base_class = type(task.original.shards[0])
            self.info.update(shards_reused=True, n_shards=self.model.n_shards, prepare_time_s=0.0)
            return False
        score_embeddings(task.original)  # unsupported models fail before any training
        self.base_class = type(task.original)
        path, meta = self._checkpoint(task)
        loaded = self._load(path, meta, task.train) if self.params.shard_reuse else None
        self.info["shards_reused"] = loaded is not None
        if loaded is None:
            start = perf_counter()
            ensemble = self._build(task)
            meta["build_time_s"] = perf_counter() - start
            if distributed.is_main():
                save_checkpoint(path, ensemble.state_dict(), meta)
        else:
            ensemble, meta = loaded
        self.info["shards_build_time_s"] = meta.get("build_time_s")
        if loaded is not None:  # built by an earlier run: its cost is still this preparation's
            self.info["prepare_time_s"] = meta.get("build_time_s")
        self.model = ensemble.eval()
        self.info["n_shards"] = ensemble.n_shards
        self.info["shard_sizes"] = np.bincount(ensemble.partition_shards.numpy(), minlength=ensemble.n_shards).tolist()
        self.info["shard_checkpoint"] = str(path)
        return True

    def _build(self, task) -> ShardEnsemble:
        shard_of = np.asarray(self.partition(task), dtype=np.int64)
        valid_ds = _valid_dataset(task.valid)
        parts = split_dataset(task.train, shard_of, self.params.n_shards)
        trained = self.train_shards(list(range(len(parts))), parts, valid_ds, "building")
        models = [trained[k][0] for k in range(len(parts))]
        ensemble = self.ensemble_class(self.config, task.train, dataset_keys(task.train), shard_of, models)
        valid = None
        if self.has_aggregator and valid_ds is not None and self.config["eval_step"] > 0:
            valid = RemainingLoaders(self.config, task.train, valid_ds, valid_ds).valid  # history D_a
        self.refresh_aggregator(ensemble.to(self.device), task.train, valid)
        return ensemble

    # ---- unlearning: retrain the touched shards, refresh the aggregation ---------------------
    def erase(self, task, remaining) -> None:
        ensemble = self.model
        touched = np.unique(ensemble.shard_ids(task.request.users, task.request.items))
        valid_ds = _valid_dataset(task.valid)
        parts = ensemble.split(remaining)
        start = perf_counter()
        trained = self.train_shards(touched.tolist(), parts, valid_ds, "retraining")
        for k, (model, _) in trained.items():
            ensemble.replace_shard(k, model)
        epochs = [e for _, e in trained.values()]
        shards_time, start = perf_counter() - start, perf_counter()
        self.refresh_aggregator(ensemble, remaining, task.valid)
        ensemble.keep_partition(dataset_keys(remaining))
        self.model = ensemble
        self.info.update(shards_retrained=len(touched), retrained_shards=touched.tolist(), shard_epochs=epochs,
                         shards_time_s=shards_time)
        if self.has_aggregator:
            self.info["aggregator_time_s"] = perf_counter() - start

    def train_shards(self, shards: list[int], parts: list, valid_ds, purpose: str) -> dict[int, tuple[nn.Module, int]]:
        """{k: (trained sub-model, epochs)} for the shards ``shards``; in a process group rank r
        trains every N-th of them (from the r-th) and the trained shards are copied to all ranks."""
        trained = {}
        for turn, k in enumerate(shards):
            if turn % distributed.world() == distributed.rank():
                trained[k] = (self.train_shard(k, parts[k], valid_ds, purpose), len(self.train_loss_dict))
            else:  # another rank trains it: a model of the same shapes receives its parameters
                trained[k] = (self.base_class(self.config, parts[k]).to(self.device).eval(), None)
        if distributed.active():
            for turn, k in enumerate(shards):
                owner = turn % distributed.world()
                distributed.broadcast_module(trained[k][0], src=owner)
                trained[k] = (trained[k][0], distributed.broadcast_object(trained[k][1], src=owner))
        return trained

    def train_shard(self, k: int, data, valid_ds, purpose: str = "training") -> nn.Module:
        """A fresh sub-model (seed ``seed + k``) trained on shard data ``data`` only."""
        logger.info("%s: %s shard %d on %d interactions", type(self).__name__, purpose, k,
                    len(data.inter_feat), extra={"stage": True})  # a console line (recbole_unlearn.console)
        valid = self._shard_valid(data, valid_ds)
        init_seed(self.config["seed"] + k, self.config["reproducibility"])
        model = self.base_class(self.config, data).to(self.device)
        if len(data.inter_feat) > 0:
            self.model = model
            self.learning_rate = self.config["learning_rate"]
            self.reset_optimizer()
            self.fit_on(data, valid, epochs=self.config["epochs"], verbose=False, loader=shard_train_loader(self.config, data))
            for key in ("epochs", "converged"):  # one shard's, not the method's
                self.info.pop(key, None)
        return model.eval()

    def _shard_valid(self, data, valid_ds):
        """Validation loader of the shard's users, history = the shard's data (None: no stopping)."""
        if valid_ds is None or self.config["eval_step"] <= 0:
            return None
        users = torch.unique(data.inter_feat[data.uid_field])
        keep = torch.isin(valid_ds.inter_feat[valid_ds.uid_field], users).numpy()
        if not keep.any():
            return None
        sub = select_rows(valid_ds, np.flatnonzero(keep))
        return RemainingLoaders(self.config, data, sub, sub).valid

    # ---- persistence -----------------------------------------------------------------------
    def _checkpoint(self, task) -> tuple[Path, dict]:
        fingerprint = data_fingerprint(task.train)
        name = type(self).__name__
        settings = {k: self.config[k] for k in TRAINING_KEYS if k in self.config}
        settings.update({k: v for k, v in asdict(self.params).items() if k not in ("shard_dir", "shard_reuse")})
        settings.update(self.settings_extra(task))
        settings = json.loads(json.dumps(settings, default=str, sort_keys=True))
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
        root = Path(self.params.shard_dir or Path(self.config["checkpoint_dir"]) / "shards")
        stem = f"{self.config['dataset']}-{self.config['model']}-{name}-K{self.params.n_shards}"
        meta = {
            "role": "shards", "unlearner": name, "model": self.config["model"],
            "dataset": self.config["dataset"], "fingerprint": fingerprint, "settings": settings,
        }
        return root / f"{stem}-{fingerprint}-{digest}.pth", meta

    def _load(self, path: Path, meta: dict, train) -> tuple[ShardEnsemble, dict] | None:
        if not path.is_file():
            return None
        try:
            state, saved = load_checkpoint(path)
        except UnlearnInputError as e:
            logger.warning("cannot reuse %s (%s): retraining the shards", path, e)
            return None
        if any(saved.get(k) != meta[k] for k in ("fingerprint", "settings", "model", "unlearner")):
            logger.info("shard checkpoint %s was built with other data or settings: retraining", path)
            return None
        keys, shards = state["partition_keys"].numpy(), state["partition_shards"].numpy()
        row_keys = dataset_keys(train)
        shard_of = shards[np.searchsorted(keys, row_keys)]
        parts = split_dataset(train, shard_of, self.params.n_shards)
        models = [self.base_class(self.config, part) for part in parts]
        ensemble = self.ensemble_class(self.config, train, row_keys, shard_of, models)
        ensemble.load_state_dict(state)
        return ensemble.to(self.device), saved


def _valid_dataset(valid_loader):
    """The validation Dataset behind a loader (None without one)."""
    return None if valid_loader is None else valid_loader._dataset
