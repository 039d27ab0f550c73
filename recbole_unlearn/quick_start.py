"""``run_unlearn``: the whole pipeline of one run, callable from Python.

Config (every key checked) → dataset → split (built once) → the checkpoint's ledger removed
from the training split → request → original model Θ_a (trained, or loaded from ``checkpoint``
and checked against the data) → D_r → the unlearner's Θ_u (timed) → with ``compare: retrain``
also Retrain and Retrain* → every row evaluated on the same loaders → the staged outputs (Θ_u
with its ledger and method state, results.json, the picture) published together → one audit
record.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter

import pandas as pd
import torch
from recbole.data import create_dataset
from recbole.utils import init_seed

from recbole_unlearn.checkpoint import Checkpoint, file_sha256, read_checkpoint, remap_rows, save_checkpoint
from recbole_unlearn.config import Config, config_with
from recbole_unlearn.console import setup_logging, stage
from recbole_unlearn.data import ForgetRequest, build_loaders, build_request, inject_pairs, remaining_dataset
from recbole_unlearn.data.ledger import Ledger, data_fingerprint, new_request_id, token_codes, tokens_of
from recbole_unlearn.data.remaining import dataset_keys, select_rows
from recbole_unlearn.errors import UnlearnInputError
from recbole_unlearn.options import shown
from recbole_unlearn import plot
from recbole_unlearn.outputs import RunOutputs, append_audit
from recbole_unlearn.plot import pair_probabilities
from recbole_unlearn.report import evaluate_row, forget_user_topk, format_table, make_eval_setup
from recbole_unlearn.unlearner import get_unlearner
from recbole_unlearn.unlearner.base import BestStateTrainer, UnlearnOutcome, UnlearnTask
from recbole_unlearn.unlearner.retrain import Retrain

logger = logging.getLogger(__name__)


def train_original(config, train, valid) -> tuple[torch.nn.Module, float, dict]:
    """Θ_a: a fresh model trained on D_a with RecBole's loop and early stopping; also its
    time and the trainer's info (``epochs``, ``converged``)."""
    start = perf_counter()
    init_seed(config["seed"], config["reproducibility"])
    trainer = BestStateTrainer(config, config.model_class(config, train))
    trainer.fit_on(train, valid)
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
    model = config.model_class(config, train)
    state = ckpt.state_dict
    if ckpt.id_codes is not None:
        state = remap_rows(state, ckpt.id_codes, current_codes(train, ckpt.meta), model.state_dict())
    ensemble = ckpt.meta.get("ensemble")
    if ensemble is not None:
        return get_unlearner(ensemble).restore_ensemble(config, train, state).eval()
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
    valid_r: object  # validation loader with history D_r (early stopping of every row)
    test_r: object  # test loader with history D_r (evaluation of every row)
    ledger: Ledger = field(default_factory=Ledger)
    checkpoint: Checkpoint | None = None
    source_rows: int = 0
    method_state: tuple[str, dict] | None = None  # (unlearner, tensors) left by the previous request


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


def prepare(config: Config, saved: bool = True, checkpoint: Checkpoint | None = None) -> Experiment:
    """Dataset, split (built once), the checkpoint's ledger applied, request, Θ_a (trained or
    loaded) and the D_r loaders.  Writes nothing (``saved`` is kept for callers);
    ``checkpoint`` is the already read ``config['checkpoint']``."""
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
    request = build_request(config, train_a, dataset_keys(full))
    if request.inject:
        train_a = inject_pairs(train_a, request.users, request.items)
    summary = request.summary()
    stage("request: %s, %d users, %d interactions", summary["mode"], summary["users"], summary["interactions"])
    source_rows = len(full.inter_feat)
    if ckpt is not None:
        check_fingerprint(config, ckpt, train_a, ledger, source_rows)
        original = load_original(config, train_a, ckpt)
        method_state = carried_state(config, ckpt)
        row = {"train_time_s": None, "checkpoint": str(config["checkpoint"])}
        stage("original: loaded from %s", config["checkpoint"])
    else:
        _, valid_a, _ = build_loaders(config, train_a, valid_ds, test_ds)
        stage("original: training %s on %d interactions ...", config["model"], len(train_a.inter_feat))
        original, train_time, info = train_original(config, train_a, valid_a)
        row, method_state = {"train_time_s": train_time, "epochs": info["epochs"],
                             "original_converged": info["converged"], "init_seed": int(config["seed"]),
                             "train_seed": int(config["seed"])}, None
        stage("original: trained in %.1f s, %d epochs%s", train_time, info["epochs"],
              "" if info["converged"] is not False else " (stopped at the epoch cap, still improving)")
    remaining = remaining_dataset(train_a, request)
    _, valid_r, test_r = build_loaders(config, remaining, valid_ds, test_ds)
    return Experiment(config, train_a, valid_ds, test_ds, request, original, row, remaining, valid_r, test_r,
                      ledger, ckpt, source_rows, method_state)


def run_unlearner(exp: Experiment, cls: type, config: Config | None = None) -> UnlearnOutcome:
    """Apply unlearner class ``cls`` to a copy of Θ_a (Θ_a itself is never modified)."""
    config = exp.config if config is None else config
    init_seed(config["seed"], config["reproducibility"])
    carried = exp.method_state[1] if exp.method_state and exp.method_state[0] == cls.__name__ else None
    task = UnlearnTask(config, exp.original, exp.train, exp.request, exp.valid_r, carried)
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
            row["speedup"] = retrain_time / row["time_s"]
            # a first request also pays the method's preparation
            row["first_request_speedup"] = retrain_time / (row["time_s"] + (row.get("prepare_time_s") or 0.0))
    return setup


def run_unlearn(model=None, dataset=None, config_file_list=None, config_dict=None, saved: bool = True) -> dict:
    """Run one unlearning request; returns the results dict.

    With ``saved`` the run's outputs (the original it trained, the unlearned checkpoint with
    its ledger, results.json) are staged and published together at the end, and one record is
    appended to the audit trail; a failed run publishes nothing.

    Args:
        model: a plugin model's name (e.g. ``ENMF``) or None to take it from the config.
        dataset: dataset name or None.
        config_file_list: the user's YAML files (override the plugin's properties).
        config_dict: keys overriding the files.
        saved: write the outputs.
    """
    config = Config(model, dataset, config_file_list, config_dict)
    unlearner_cls = get_unlearner(config["unlearner"])
    plan = comparison_plan(config, unlearner_cls)
    for _, cls, cfg in plan:
        cls.params_class.from_config(cfg)  # bad keys fail before any training
    unlearner_name = unlearner_cls.__name__
    inputs = [config["checkpoint"], config["forget_file"], *(config_file_list or [])]
    outputs = RunOutputs(config, unlearner_name, inputs) if saved else None
    dataset_files_or_error(config)
    checkpoint = read_input_checkpoint(config)
    setup_logging(config)
    logger.info(config)
    try:
        exp = prepare(config, checkpoint=checkpoint)
        run = _run_rows(exp, plan, unlearner_cls)
        if saved:
            _publish(exp, run, outputs, unlearner_name)
    except BaseException:
        if outputs is not None:
            outputs.abort()
        raise
    return run.results


@dataclass
class RunRows:
    """What the rows of one run produced: ``results`` (JSON-able), each row's model and carried
    method state, and the (forgotten, never-seen) probabilities the picture draws."""

    results: dict
    models: dict
    states: dict
    scores: dict


def _run_rows(exp: Experiment, plan, unlearner_cls) -> RunRows:
    config = exp.config
    rows: dict[str, dict] = {"Original": exp.original_row}
    models: dict[str, torch.nn.Module] = {"Original": exp.original}
    states: dict[str, dict | None] = {}
    for name, cls, cfg in plan:
        stage("unlearning: %s ...", name)
        outcome = run_unlearner(exp, cls, cfg)
        models[name], states[name] = outcome.model, outcome.state
        rows[name] = {"time_s": outcome.time_s, **outcome.info}
        stage("unlearning: %s done in %.2f s", name, outcome.time_s)
    stage("evaluation: %d rows on the test split ...", len(models))
    setup = evaluate_rows(exp, models, rows)
    results = {
        "dataset": config["dataset"],
        "model": config["model"],
        "unlearner": unlearner_cls.__name__,
        "seed": config["seed"],
        "forget": exp.request.summary(),
        "rows": rows,
    }
    if exp.original_row.get("original_converged") is False:
        results["original_converged"] = False
        logger.warning("the original stopped at the epoch cap (%d epochs) while its validation metric was still "
                       "improving: train it longer (--epochs) before trusting this comparison", config["epochs"])
    stage("results (k=20; F- = forgetting users):\n" + format_table(results))
    return RunRows(results, models, states, _picture_scores(exp, setup, models, unlearner_cls.__name__))


def _picture_scores(exp: Experiment, setup, models: dict, unlearner: str) -> dict:
    """(forgotten, never-seen) probabilities of the rows the picture shows."""
    pairs = setup.mia_pairs
    if pairs is None or len(pairs) == 0:
        return {}
    return {name: (pair_probabilities(models[name], exp.request.users, exp.request.items),
                   pair_probabilities(models[name], pairs.nonmember_users, pairs.nonmember_items))
            for name in ("Original", unlearner, "Retrain") if name in models}


def _publish(exp: Experiment, run: RunRows, outputs: RunOutputs, unlearner: str) -> None:
    """Stage the checkpoints, publish everything, append the audit record."""
    config = exp.config
    results, models, states, scores = run.results, run.models, run.states, run.scores
    request_id = str(config["request_id"] or new_request_id())
    stem = f"{config['dataset']}-{config['model']}"
    common = {"source_rows": exp.source_rows}
    if exp.checkpoint is None and config["save_original"]:
        name = f"{stem}-original.pth"
        save_checkpoint(outputs.path(name), models["Original"].state_dict(),
                        checkpoint_meta(config, exp.train, role="original", ledger=exp.ledger.to_meta(), **common),
                        current_codes(exp.train, {"ledger": exp.ledger.to_meta()}))
        results["rows"]["Original"]["checkpoint"] = str(outputs.final(name))
    ledger = Ledger(exp.ledger.salt, list(exp.ledger.entries))
    if len(exp.request) > 0 and not exp.request.inject:
        ledger.record(exp.train, exp.request, request_id)
    model = models[unlearner]
    extra = {"ensemble": unlearner} if getattr(model, "is_ensemble", False) else {}
    name = f"{stem}-{unlearner}.pth"
    if states.get(unlearner):  # the method state travels beside the checkpoint it belongs to
        extra.update(state_file=f"{stem}-{unlearner}.state.pth", state_id=new_request_id())
        save_checkpoint(outputs.path(extra["state_file"]), states[unlearner],
                        {"role": "method_state", "unlearner": unlearner, "state_id": extra["state_id"]})
    meta = checkpoint_meta(config, exp.remaining, role="unlearned", unlearner=unlearner, request_id=request_id,
                 ledger=ledger.to_meta(), parent_sha256=exp.checkpoint.sha256 if exp.checkpoint else None,
                 **common, **extra)
    save_checkpoint(outputs.path(name), model.state_dict(), meta, current_codes(exp.remaining, meta))
    results["checkpoint"] = str(outputs.final(name))
    results["request_id"] = request_id
    results["ledger_requests"] = len(ledger.entries)
    rows = results["rows"]
    forget_file = config["forget"] == "file" and config["forget_file"]
    record = {  # built from the staged files, appended once they are published
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "request_id": request_id,
        "request_file_sha256": file_sha256(forget_file) if forget_file else None,
        "request": exp.request.summary(),
        "unlearner": unlearner,
        "params": _params_of(config, unlearner),
        "input_checkpoint": ({"path": str(Path(config["checkpoint"]).resolve()), "sha256": exp.checkpoint.sha256}
                             if exp.checkpoint else None),
        "output_checkpoint": {"path": str(outputs.final(name).resolve()), "sha256": file_sha256(outputs.path(name))},
        "fingerprint": meta["fingerprint"],
        "evidence": {
            "repredict_original": rows["Original"].get("repredict_score"),
            "repredict_unlearned": rows[unlearner].get("repredict_score"),
            "mia_auc_original": rows["Original"].get("mia_auc"),
            "mia_auc_unlearned": rows[unlearner].get("mia_auc"),
        },
    }
    summary = exp.request.summary()
    title = (f"{config['dataset']} · {config['model']} · {unlearner} · request {summary['mode']}: "
             f"{summary['users']} users, {summary['interactions']} interactions")
    picture = (lambda path: plot.draw(path, scores, rows, title)) if scores else None
    if picture is None or not outputs.publish(results, picture):
        stage("picture: skipped (%s)", "matplotlib is not installed" if scores else "no forgotten pairs")
    append_audit(outputs.audit, record)
    stage("outputs: %s (results: %s); audit record appended to %s", outputs.run_dir, outputs.results, outputs.audit)


def _params_of(config, unlearner: str) -> dict:
    params = get_unlearner(unlearner).params_class.from_config(config)
    return json.loads(json.dumps(dataclasses.asdict(params), default=str))
