"""The experiment of one request: what every row starts from, the rows, their evaluation.

Config (every key checked) → dataset → split (built once) → the checkpoint's ledger removed
from the training split (:func:`open_chain`) → request → original model Θ_a (the chain's model,
or loaded from ``checkpoint`` and checked against the data, or trained) → D_r
(:func:`experiment_for`) → the unlearner's Θ_u (timed, :func:`run_unlearner`) → with
``compare: retrain`` also Retrain and Retrain* (:func:`comparison_plan`) → every row evaluated
on the same loaders (:func:`evaluate_rows`).  Publishing the outputs and chaining requests is
:mod:`recbole_unlearn.session`.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter

import pandas as pd
import torch
from recbole.data import create_dataset
from recbole.utils import init_seed

from recbole_unlearn.checkpoint import Checkpoint, read_checkpoint, remap_rows
from recbole_unlearn.config import Config, config_with
from recbole_unlearn.console import stage
from recbole_unlearn.data import ForgetRequest, build_request, inject_pairs, remaining_dataset
from recbole_unlearn.data.ledger import Ledger, data_fingerprint, token_codes, tokens_of
from recbole_unlearn.data.remaining import RemainingLoaders, dataset_keys, select_rows
from recbole_unlearn.errors import UnlearnInputError
from recbole_unlearn.options import shown
from recbole_unlearn.report import evaluate_row, forget_user_topk, make_eval_setup, speedups
from recbole_unlearn.unlearner import get_unlearner
from recbole_unlearn.unlearner.base import BestStateTrainer, UnlearnOutcome, UnlearnTask
from recbole_unlearn.unlearner.retrain import Retrain

logger = logging.getLogger(__name__)


def train_original(config, train, valid) -> tuple[torch.nn.Module, float, dict]:
    """Θ_a: a fresh model trained on D_a with RecBole's loop and early stopping; also its
    time and the trainer's info (``epochs``, ``converged``)."""
    start = perf_counter()
    init_seed(config["seed"], config["reproducibility"])
    trainer = BestStateTrainer(config, config.model_class(config, train).to(config["device"]))
    trainer.fit_on(train, valid, data_parallel=True)  # in a process group: RecBole's DDP loop
    return trainer.model.eval(), perf_counter() - start, dict(trainer.info)


def _split_is_fixed(config) -> bool:
    return bool(config["benchmark_filename"])


def check_fingerprint(config, ckpt: Checkpoint, train, ledger: Ledger, source_rows: int) -> None:
    """The checkpoint was trained on ``train`` (the split less the ledger's requests)."""
    path = shown(str(config["checkpoint"]))
    fingerprint = ckpt.meta.get("fingerprint")
    if fingerprint is None:  # allowed by allow_unfingerprinted_checkpoint (read_input_checkpoint)
        logger.warning("checkpoint %s has no data fingerprint: it is assumed to fit this split", path)
        return
    if fingerprint == data_fingerprint(train):
        return
    before = ckpt.meta.get("source_rows")
    if not _split_is_fixed(config) and isinstance(before, int) and source_rows < before:
        raise UnlearnInputError(
            f"checkpoint {path}: the dataset's atomic file has {before - source_rows} rows fewer than when "
            "the model was trained, and the split is random (eval_args split RS), so its training split "
            "cannot be rebuilt; keep forgotten rows in the file (the checkpoint's ledger removes them) or "
            "use a fixed split (benchmark_filename)"
        )
    raise UnlearnInputError(
        f"checkpoint {path} was trained on other data than this run's training split (dataset "
        f"{ckpt.meta.get('dataset')!r}, seed {ckpt.meta.get('seed')}, forget {ckpt.meta.get('forget')!r}, "
        f"{len(ledger.entries)} honoured requests removed); use the dataset, seed, split settings "
        "and scenario it was trained with"
    )


def load_original(config, train, ckpt: Checkpoint) -> torch.nn.Module:
    """Θ_a from checkpoint ``ckpt`` (already checked against ``train``), its rows mapped onto
    this dataset's ids when the ids were renumbered."""
    model = config.model_class(config, train).to(config["device"])
    state = ckpt.state_dict
    if ckpt.id_codes is not None:
        state = remap_rows(state, ckpt.id_codes, current_codes(train, ckpt.meta), model.state_dict())
    ensemble = ckpt.meta.get("ensemble")
    if ensemble is not None:
        return get_unlearner(ensemble).restore_ensemble(config, train, state).to(config["device"]).eval()
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # tensor shapes of another dataset or embedding size
        raise UnlearnInputError(f"checkpoint {config['checkpoint']} does not fit the model: {e}") from None
    if missing or [k for k in unexpected if not k.startswith("restore_")]:
        raise UnlearnInputError(f"checkpoint does not fit the model: missing {missing}, unexpected {unexpected}")
    return model.eval()


def current_codes(dataset, meta: dict) -> dict:
    """Salted token codes of ``dataset``'s internal ids, with the salt of checkpoint ``meta``."""
    salt = bytes.fromhex(Ledger.from_meta(meta).salt)
    return {kind: token_codes(tokens_of(dataset, f), salt)
            for kind, f in (("user", dataset.uid_field), ("item", dataset.iid_field))}


def checkpoint_meta(config, train, **extra) -> dict:
    """The metadata every checkpoint carries: model, dataset, seed, scenario and the data
    fingerprint of what it was trained on, plus ``extra``."""
    return {
        "model": config["model"],
        "dataset": config["dataset"],
        "seed": config["seed"],
        "forget": config["forget"],
        "fingerprint": data_fingerprint(train),
        **extra,
    }


@dataclass
class Experiment:
    """One split, one request and the original model Θ_a: what every row starts from."""

    config: Config
    train: object  # D_a (with injected pairs in the noise scenario; less the ledger's requests)
    valid: object  # validation Dataset
    test: object  # test Dataset
    request: ForgetRequest
    original: torch.nn.Module
    original_row: dict
    remaining: object  # D_r
    loaders: RemainingLoaders  # validation and test loaders with history D_r, built on first use
    ledger: Ledger = field(default_factory=Ledger)
    checkpoint: Checkpoint | None = None
    source_rows: int = 0
    method_state: tuple[str, dict] | None = None  # (unlearner, tensors) left by the previous request

    @property
    def valid_r(self):
        """Validation loader with history D_r (early stopping of every row)."""
        return self.loaders.valid

    @property
    def test_r(self):
        """Test loader with history D_r (evaluation of every row)."""
        return self.loaders.test


def carried_state(config, ckpt: Checkpoint) -> tuple[str, dict] | None:
    """The method state saved beside checkpoint ``ckpt`` by the request that wrote it, if it is
    this run's unlearner's and belongs to exactly that checkpoint (else None: it is rebuilt)."""
    name, owner = ckpt.meta.get("state_file"), ckpt.meta.get("unlearner")
    if not name or owner != config["unlearner"]:
        return None
    path = Path(config["checkpoint"]).parent / str(name)
    try:
        state = read_checkpoint(path)
    except UnlearnInputError as e:
        logger.warning("method state %s cannot be used (%s): it is rebuilt", path, e)
        return None
    if state.meta.get("state_id") != ckpt.meta.get("state_id"):
        logger.warning("method state %s belongs to another checkpoint: it is rebuilt", path)
        return None
    return owner, state.state_dict


def dataset_files_or_error(config) -> None:
    """The dataset's atomic files exist (RecBole would try to download a missing one)."""
    folder = Path(config["data_path"])
    name = config["dataset"]
    files = [f"{name}.{b}.inter" for b in config["benchmark_filename"]] if config["benchmark_filename"] else [f"{name}.inter"]
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise UnlearnInputError(
            f"dataset {shown(name, 80)}: {shown(missing[0], 80)} not found in {shown(str(folder))}; "
            "give --data_path=FOLDER, the folder that holds the dataset's folder"
        )


def dataset_or_error(config):
    """RecBole's dataset, its files checked first."""
    dataset_files_or_error(config)
    name = config["dataset"]
    try:
        return create_dataset(config)
    except (OSError, ValueError, KeyError, pd.errors.ParserError) as e:
        raise UnlearnInputError(f"dataset {shown(name, 80)} cannot be read: {shown(str(e))}") from None


def read_input_checkpoint(config) -> Checkpoint | None:
    """The ``checkpoint`` the run starts from (None without one), its structure checked."""
    if not config["checkpoint"]:
        return None
    path = shown(str(config["checkpoint"]))
    ckpt = read_checkpoint(config["checkpoint"], allow_pickle=bool(config["allow_pickle_checkpoint"]))
    if ckpt.meta.get("model") not in (None, config["model"]):
        raise UnlearnInputError(f"checkpoint holds a {shown(ckpt.meta['model'], 60)} model, not {config['model']}")
    if ckpt.meta.get("fingerprint") is None and not config["allow_unfingerprinted_checkpoint"]:
        raise UnlearnInputError(
            f"checkpoint {path} has no data fingerprint, so it cannot be checked against this run's "
            "training split; convert it or give allow_unfingerprinted_checkpoint=True if you know it fits"
        )
    try:
        Ledger.from_meta(ckpt.meta)
    except ValueError as e:
        raise UnlearnInputError(f"checkpoint {path}: {e}") from None
    return ckpt


@dataclass
class Chain:
    """What a chain of requests carries from one request to the next: the dataset and its split
    (the training share less every request so far), the ledger, the model the next request
    starts from (None until the first request loads or trains it) and the method's state."""

    config: Config
    full: object  # the whole RecBole Dataset (ids, token maps)
    train: object  # the training split less the ledger's requests
    valid: object
    test: object
    ledger: Ledger
    checkpoint: Checkpoint | None  # the checkpoint the next request starts from (None: train one)
    source_rows: int
    original: torch.nn.Module | None = None
    original_row: dict = field(default_factory=dict)
    method_state: tuple[str, dict] | None = None


def open_chain(config: Config, checkpoint: Checkpoint | None = None) -> Chain:
    """Dataset, split (built once) and the checkpoint's ledger removed from the training split;
    ``checkpoint`` is the already read ``config['checkpoint']`` (None: read it here)."""
    init_seed(config["seed"], config["reproducibility"])
    full = dataset_or_error(config)
    train_a, valid_ds, test_ds = full.build()
    ckpt = checkpoint if checkpoint is not None else read_input_checkpoint(config)
    stage("data: %s, %d users, %d items; %d training, %d validation, %d test interactions", config["dataset"],
          full.user_num - 1, full.item_num - 1, len(train_a.inter_feat), len(valid_ds.inter_feat), len(test_ds.inter_feat))
    ledger = Ledger.from_meta(ckpt.meta) if ckpt is not None else Ledger()
    if ledger.entries:
        drop = ledger.forgotten_rows(train_a)
        train_a = select_rows(train_a, ~drop)
        stage("ledger: %d earlier requests honoured, %d training interactions removed", len(ledger.entries), int(drop.sum()))
    return Chain(config, full, train_a, valid_ds, test_ds, ledger, ckpt, len(full.inter_feat))


def experiment_for(chain: Chain, config: Config | None = None) -> Experiment:
    """The request of ``config`` on the chain's current training data, with the model it starts
    from: the chain's model in memory, else the checkpoint (checked against the data), else Θ_a
    trained here (after the noise scenario's pairs are injected)."""
    config = chain.config if config is None else config
    train_a = chain.train
    request = build_request(config, train_a, lambda: dataset_keys(chain.full))
    if request.inject:
        if chain.original is not None:
            raise UnlearnInputError("the noise scenario injects its pairs before the original is trained; "
                                    "it cannot be a later request of a chain")
        train_a = inject_pairs(train_a, request.users, request.items)
    summary = request.summary()
    stage("request: %s, %d users, %d interactions", summary["mode"], summary["users"], summary["interactions"])
    ckpt, method_state = chain.checkpoint, chain.method_state
    if chain.original is not None:
        original, row = chain.original, dict(chain.original_row)
    elif ckpt is not None:
        check_fingerprint(config, ckpt, train_a, chain.ledger, chain.source_rows)
        original = load_original(config, train_a, ckpt)
        method_state = carried_state(config, ckpt)
        row = {"train_time_s": None, "checkpoint": str(config["checkpoint"])}
        stage("original: loaded from %s", config["checkpoint"])
    else:
        valid_a = RemainingLoaders(config, train_a, chain.valid, chain.test).valid
        stage("original: training %s on %d interactions ...", config["model"], len(train_a.inter_feat))
        original, train_time, info = train_original(config, train_a, valid_a)
        row = {"train_time_s": train_time, "epochs": info["epochs"], "original_converged": info["converged"],
               "init_seed": int(config["seed"]), "train_seed": int(config["seed"])}
        stage("original: trained in %.1f s, %d epochs%s", train_time, info["epochs"],
              "" if info["converged"] is not False else " (stopped at the epoch cap, still improving)")
    remaining = remaining_dataset(train_a, request)
    return Experiment(config, train_a, chain.valid, chain.test, request, original, row, remaining,
                      RemainingLoaders(config, remaining, chain.valid, chain.test), chain.ledger, ckpt,
                      chain.source_rows, method_state)


def prepare(config: Config, saved: bool = True, checkpoint: Checkpoint | None = None) -> Experiment:
    """Dataset, split (built once), the checkpoint's ledger applied, request, Θ_a (trained or
    loaded) and the D_r loaders.  Writes nothing (``saved`` is kept for callers);
    ``checkpoint`` is the already read ``config['checkpoint']``."""
    return experiment_for(open_chain(config, checkpoint), config)


def run_unlearner(exp: Experiment, cls: type, config: Config | None = None) -> UnlearnOutcome:
    """Apply unlearner class ``cls`` to a copy of Θ_a (Θ_a itself is never modified)."""
    config = exp.config if config is None else config
    init_seed(config["seed"], config["reproducibility"])
    carried = exp.method_state[1] if exp.method_state and exp.method_state[0] == cls.__name__ else None
    task = UnlearnTask(config, exp.original, exp.train, exp.request, lambda: exp.valid_r, carried)
    return cls(config, copy.deepcopy(exp.original)).unlearn(task)


def comparison_plan(config: Config, unlearner_cls: type) -> list[tuple[str, type, Config]]:
    """(row name, class, config) of the rows to run: the unlearner, plus with ``compare:
    retrain`` Retrain and Retrain* (Retrain's initial parameters, another seed for the training
    process) and, with ``compare_new_init``, a retrain with another seed for everything."""
    plan = [(unlearner_cls.__name__, unlearner_cls, config)]
    compare = str(config["compare"]).lower()
    if compare == "retrain":
        other = config["seed"] + int(config["retrain_star_seed_offset"])
        star = config_with(config, retrain_seed=config["seed"], retrain_train_seed=other)  # same initialisation
        fixed = [("Retrain", Retrain, config_with(config, retrain_seed=None, retrain_train_seed=None)),
                 ("Retrain*", Retrain, star)]
        if config["compare_new_init"]:
            fixed.append(("Retrain (new init)", Retrain, config_with(config, retrain_seed=other, retrain_train_seed=None)))
        plan = fixed + [p for p in plan if p[1] is not Retrain]
    elif compare != "none":
        raise UnlearnInputError(f"compare must be none or retrain, not {config['compare']!r}")
    return plan


def evaluate_rows(exp: Experiment, models: dict, rows: dict):
    """Evaluate every model on the same loaders; adds metrics, RBO vs Retrain and speed-ups.
    Returns the evaluation setup."""
    setup = make_eval_setup(exp.config, exp.remaining, exp.valid, exp.test_r, exp.request)
    has_users = len(setup.forget_users) > 0  # an empty request (e.g. all pairs dropped) has none
    reference = forget_user_topk(models["Retrain"], setup) if "Retrain" in models and has_users else None
    retrain_time = rows.get("Retrain", {}).get("time_s")
    for name, m in models.items():
        rows[name].update(evaluate_row(m, setup, reference))
        row = rows[name]
        if retrain_time and row.get("time_s"):
            row.update(speedups(retrain_time, row["time_s"], row.get("prepare_time_s")))
    return setup
