"""The base ``Unlearner``: owns the timing, the remaining data, early stopping state and the
in-memory best checkpoint; methods override the small hook :meth:`Unlearner.erase`.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any, ClassVar

import torch
from recbole.trainer import Trainer
from recbole.utils import init_seed

from recbole_unlearn import distributed
from recbole_unlearn._compat import data_parallel_model, prepare_trainer_dir
from recbole_unlearn.config import config_with, plugin_specs
from recbole_unlearn.data.forget import ForgetRequest
from recbole_unlearn.data.remaining import remaining_dataset, train_loader, users_without_pairs
from recbole_unlearn.errors import UnlearnInputError
from recbole_unlearn.options import convert


@dataclass
class UnlearnTask:
    """What every unlearner receives.

    ``train`` is D_a (the data Θ_a was trained on), ``valid`` the validation loader whose
    history is D_r (for early stopping; given as the loader or as a function that builds it,
    then built on first use); ``original`` is Θ_a, never modified.
    ``method_state`` is what this method carried over from the previous request of a chain
    (see :meth:`Unlearner.method_state`), or None.
    """

    config: Any
    original: torch.nn.Module
    train: Any
    request: ForgetRequest
    valid_source: Any = None  # the loader, or a zero-argument function returning it
    method_state: dict | None = None

    @property
    def valid(self):
        """The validation loader (history D_r), built on first use."""
        if callable(self.valid_source):
            self.valid_source = self.valid_source()
        return self.valid_source


@dataclass
class UnlearnOutcome:
    """Θ_u with its cost.  ``time_s`` covers everything after receiving Θ_a and the request
    (building D_r, validation for stopping), not the final evaluation.  ``info`` holds
    method-specific figures (e.g. ``passes``, ``shards_retrained``, ``pretrain_time_s``)."""

    model: torch.nn.Module
    remaining: Any
    time_s: float
    info: dict = field(default_factory=dict)
    state: dict | None = None  # tensors to carry to the next request (Unlearner.method_state)


@dataclass(frozen=True)
class Params:
    """Base for typed unlearner parameters.

    Each field is read once from the config key of the same name (the unlearner's YAML file
    documents it); numbers given on the command line are cast to the field default's type, and
    :meth:`checked` validates every documented field when the unlearner is built.
    """

    @classmethod
    def from_config(cls, config) -> "Params":
        values = {}
        for f in dataclasses.fields(cls):
            if f.name not in config or config[f.name] is None:
                continue
            value = config[f.name]
            if isinstance(f.default, (int, float)) and not isinstance(f.default, bool):
                value = type(f.default)(value)
            values[f.name] = value
        return cls(**values)

    def checked(self, specs: dict) -> "Params":
        """These parameters, each documented one converted and checked against its spec (type,
        choices, bounds: the ``# (type ...)`` comment of its YAML line), once, here."""
        changes = {}
        for f in dataclasses.fields(self):
            spec = specs.get(f.name)
            if spec is not None:
                changes[f.name] = convert(spec, getattr(self, f.name))
        return dataclasses.replace(self, **changes)


class BestStateTrainer(Trainer):
    """RecBole's ``Trainer`` whose "best epoch" checkpoint lives in memory, not in a pickled
    file: ``fit_on`` trains with RecBole's own loop and ends on the best validation epoch."""

    def __init__(self, config, model: torch.nn.Module):
        prepare_trainer_dir(config)
        super().__init__(config, model)
        self._best_state: dict | None = None
        self.info: dict = {}

    def fit_on(self, data, valid, epochs: int | None = None, verbose: bool = True, loader=None,
               data_parallel: bool = False) -> None:
        """Train ``self.model`` on ``data`` with RecBole's loop and early stopping on
        ``valid``, then restore the best epoch (kept in memory, not on disk).  ``loader``
        replaces the model's own training loader over ``data``.

        ``data_parallel`` in a process group: RecBole's DDP loop (``single_spec`` off), each rank
        training on its share of every batch with the gradients all-reduced, so every rank ends
        with the same model; without a group it changes nothing."""
        self.model.set_train_data(data)
        if epochs is not None:
            self.epochs = int(epochs)
            self.eval_step = min(self.config["eval_step"], self.epochs)
        self._best_state = None
        plain, parallel = self.config, data_parallel and distributed.active()
        if parallel:
            self.config = config_with(plain, single_spec=False, world_size=distributed.world(),
                                      local_rank=distributed.local_rank())
            self.distributed_model = data_parallel_model(self.model)
        try:
            loader = train_loader(self.config, data) if loader is None else loader
            self.fit(loader, valid, verbose=verbose, saved=True, show_progress=self.config["show_progress"])
        finally:
            self.config = plain
        if parallel:
            self.info["processes"] = distributed.world()
        if self._best_state is not None:
            self.model.load_state_dict(self._best_state)
        self.info["epochs"] = len(self.train_loss_dict)
        # converged: early stopping ended the training before the epoch cap (None: no validation)
        validated = valid is not None and self.eval_step > 0
        self.info["converged"] = self.info["epochs"] < self.epochs if validated else None

    def reset_optimizer(self) -> None:
        """A fresh optimizer (and early-stopping state) for ``self.model``."""
        self.optimizer = self._build_optimizer()
        self.start_epoch, self.cur_step = 0, 0
        self.best_valid_score = float("-inf") if self.valid_metric_bigger else float("inf")
        self.train_loss_dict = {}

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        """RecBole's fit calls this on every improvement: keep the state in memory."""
        self._best_state = copy.deepcopy(self.model.state_dict())


class Unlearner(BestStateTrainer):
    """RecBole ``Trainer`` that turns Θ_a into Θ_u for a request.

    Subclasses set ``params_class`` (a :class:`Params` dataclass) and override :meth:`erase`.
    """

    params_class: ClassVar[type[Params]] = Params
    #: whether the method can start from a sharded ensemble (a SISA / RecEraser checkpoint)
    accepts_ensemble: ClassVar[bool] = False
    #: keys of :meth:`method_state` whose tensors are split by rows across the processes of a
    #: group (rank r holds rows r, r + N, ...: ``distributed.owned``; gathered before saving)
    sharded_state: ClassVar[tuple[str, ...]] = ()
    #: whether the request's users left with no training data get the rows a retrain ends
    #: with (:meth:`reset_deleted_users`); off for methods that build fresh models themselves
    resets_deleted_users: ClassVar[bool] = True

    def __init__(self, config, model: torch.nn.Module):
        reason = self.refusal(type(model))
        if reason:
            raise UnlearnInputError(reason)
        super().__init__(config, model)
        self.params = self.params_class.from_config(config).checked(plugin_specs())

    @classmethod
    def refusal(cls, model_class: type) -> str | None:
        """Why this method cannot serve models of ``model_class`` (one line naming a method
        that can), or None.  Asked before any training, and again when the method is built."""
        return None

    # ---- the loop -------------------------------------------------------------------------
    def unlearn(self, task: UnlearnTask) -> UnlearnOutcome:
        """Θ_u for ``task``; ``self.model`` starts as a copy of Θ_a.

        Order: :meth:`pretrain` (one-off work on D_a that does not depend on the request, e.g.
        shards or an influence encoder; timed separately as ``pretrain_time_s``; its cost is
        ``prepare_time_s``, which a method that reuses a cached preparation sets to what that
        preparation cost, and a chain that carries its state to 0), then the timed
        part: D_r is built, ``self.model.drop_pairs(D_r, ...)`` switches the model's structure
        (ENMF history, LightGCN graph) to D_r, and :meth:`erase` updates the parameters.
        An empty request returns Θ_a unchanged.
        """
        if getattr(task.original, "is_ensemble", False) and not self.accepts_ensemble:
            raise UnlearnInputError(
                f"the checkpoint holds a {type(task.original).__name__} of shard models, which "
                f"{type(self).__name__} cannot update; continue its chain with the unlearner that built it, "
                "or Retrain"
            )
        start = perf_counter()
        if self.pretrain(task):
            self.info["pretrain_time_s"] = perf_counter() - start
            self.info.setdefault("prepare_time_s", self.info["pretrain_time_s"])
        start = perf_counter()
        remaining = remaining_dataset(task.train, task.request)
        if len(task.request) > 0:
            request = task.request
            self.model.drop_pairs(remaining, torch.as_tensor(request.users), torch.as_tensor(request.items))
            self.erase(task, remaining)
            if self.resets_deleted_users:
                self.reset_deleted_users(task, remaining)
        state = self.method_state(task, remaining)
        self.model.eval()
        return UnlearnOutcome(self.model, remaining, perf_counter() - start, dict(self.info), state)

    def pretrain(self, task: UnlearnTask) -> bool:
        """Request-independent preparation on ``task.train`` (D_a); return True if it did any."""
        return False

    def erase(self, task: UnlearnTask, remaining) -> None:
        """The method: update ``self.model`` so it no longer reflects ``task.request``."""
        raise NotImplementedError

    def reset_deleted_users(self, task: UnlearnTask, remaining) -> None:
        """Give the request's users with no pair left in D_r (a whole-user deletion) the ego
        rows a retrain on D_r ends with for them, as the model says
        (``model.rows_without_pairs``): for a BPR model the rows it starts from
        (:meth:`initial_ego`; such a user is in no batch, so no step moves them), for ENMF 0.
        Whatever the method left there (WarmStart leaves Θ_a's trained row, which still ranks
        items by the deleted history) is replaced.  Counted in ``info["users_reset"]``."""
        forget = torch.as_tensor(task.request.forget_users, dtype=torch.long)
        deleted = users_without_pairs(remaining, forget).to(self.device)
        if not len(deleted):
            return
        ego = self.model.ego_embeddings().detach().clone()
        ego[deleted] = self.model.rows_without_pairs(deleted, lambda: self.initial_ego(remaining)[deleted]).to(ego)
        self.model.write_ego(ego)
        self.info["users_reset"] = int(len(deleted))

    def initial_ego(self, remaining) -> torch.Tensor:
        """The ego rows [n_users + n_items, d] a retrain on ``remaining`` starts from: the model
        class's own initialisation under the run's seed, as Retrain draws it."""
        init_seed(self.config["seed"], self.config["reproducibility"])
        return self.config.model_class(self.config, remaining).to(self.device).ego_embeddings().detach()

    def method_state(self, task: UnlearnTask, remaining) -> dict | None:
        """Request-independent state for the next request of a chain, brought up to date for
        Θ_u and D_r (inside the timed part), as ``{name: tensor}``; None when there is none.
        It is saved beside the unlearned checkpoint and handed back as ``task.method_state``."""
        return None
