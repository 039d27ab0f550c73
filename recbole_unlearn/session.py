"""The pipeline of a run and of a long-lived session of requests: one code path.

A :class:`UnlearnSession` holds a model, its data, the ledger and the method's state in memory
and applies requests one after another, each published as a run of the command line is (the
unlearned checkpoint with its ledger and method state, results.json, one audit record), without
reloading the data or the model between requests.  :func:`run_unlearn` (the command line) is a
session of one request.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from recbole_unlearn import distributed, plot
from recbole_unlearn.checkpoint import file_sha256, read_checkpoint, save_checkpoint
from recbole_unlearn.config import Config, config_with
from recbole_unlearn.console import setup_logging, stage
from recbole_unlearn.data.ledger import Ledger, new_request_id
from recbole_unlearn.errors import UnlearnInputError
from recbole_unlearn.options import shown
from recbole_unlearn.outputs import RunOutputs, append_audit
from recbole_unlearn.plot import pair_probabilities
from recbole_unlearn.quick_start import (
    Experiment, checkpoint_meta, comparison_plan, current_codes, dataset_files_or_error, evaluate_rows,
    experiment_for, open_chain, read_input_checkpoint, run_unlearner,
)
from recbole_unlearn.report import format_table
from recbole_unlearn.unlearner import get_unlearner

logger = logging.getLogger(__name__)

#: keys that name one request's outputs or identity: a later request of a session gets its own
PER_REQUEST_KEYS = ("request_id", "run_dir", "results")


class UnlearnSession:
    """A model, its data, ledger and method state, kept in memory across requests.

    >>> session = UnlearnSession.open("ENMF", "ml-100k", config_dict={"checkpoint": "ENMF.pth"})
    >>> session.forget(forget_file="monday.forget")
    >>> session.forget(forget_file="tuesday.forget")

    Every request is checked, timed, evaluated and published as a command-line run is; the next
    request starts from the result, as a run given the previous checkpoint would.

    Under ``torchrun`` (or ``nproc`` > 1) every process opens the session and applies every
    request together (the methods split their work, :mod:`recbole_unlearn.distributed`); rank 0
    alone evaluates, writes the outputs, the audit record and the log file.
    """

    def __init__(self, config: Config, config_file_list=None, saved: bool = True):
        self.config, self.files, self.saved = config, list(config_file_list or []), saved
        self.requests = 0
        self.applied: list = []  # every request applied so far (ForgetRequest, internal ids)
        self.last_checkpoint: Path | None = None
        distributed.setup(config)
        self._check_keys(config)
        self._outputs = self._new_outputs(config)  # an output clash fails before any work (rank 0 checks)
        dataset_files_or_error(config)
        checkpoint = read_input_checkpoint(config)
        setup_logging(config)
        logger.info(config)
        self.chain = open_chain(config, checkpoint)

    @classmethod
    def open(cls, model=None, dataset=None, config_file_list=None, config_dict=None, saved: bool = True):
        """A session on ``dataset`` for ``model`` (``checkpoint`` in the config: start from it;
        else the first request trains the original)."""
        return cls(Config(model, dataset, config_file_list, config_dict), config_file_list, saved)

    @staticmethod
    def _check_keys(config) -> None:
        for _, cls, cfg in comparison_plan(config, get_unlearner(config["unlearner"])):
            cls.params_class.from_config(cfg)  # bad keys fail before any training
            reason = cls.refusal(config.model_class)  # so does a model the method cannot serve
            if reason:
                raise UnlearnInputError(reason)

    def _new_outputs(self, config) -> RunOutputs | None:
        """The request's staged outputs (None unless saved; None on every rank but 0)."""
        if not self.saved:
            return None
        inputs = [config["checkpoint"], config["forget_file"], *self.files]
        return distributed.on_main(lambda: RunOutputs(config, get_unlearner(config["unlearner"]).__name__, inputs),
                                   UnlearnInputError)

    def _request_config(self, keys: dict) -> Config:
        """The first request: the session's config (and ``keys``); a later one: also the
        previous result as its checkpoint and fresh per-request keys."""
        if self.requests == 0 and not keys:
            return self.config
        if self.requests > 0:
            keys = {**{k: None for k in PER_REQUEST_KEYS}, "checkpoint": self.last_checkpoint and str(self.last_checkpoint),
                    **keys}
        if keys.get("forget_file") and "forget" not in keys:
            keys["forget"] = "file"
        config = config_with(self.config, **keys)
        self._check_keys(config)
        return config

    def forget(self, **keys) -> dict:
        """Apply one request and return its results; ``keys`` are config keys of this request,
        e.g. ``forget_file=PATH`` (a request file), ``unlearner=...``."""
        config = self._request_config(keys)
        if self.requests == 0 and not keys:
            outputs = self._outputs  # staged when the session opened
        else:
            if self._outputs is not None:
                self._outputs.abort()
            outputs = self._new_outputs(config)
        self._outputs = None
        unlearner_cls = get_unlearner(config["unlearner"])
        name = unlearner_cls.__name__
        try:
            exp = experiment_for(self.chain, config)
            run = run_rows(exp, comparison_plan(config, unlearner_cls), unlearner_cls)
            request_id = distributed.broadcast_object(str(config["request_id"] or new_request_id()))
            ledger = next_ledger(exp, request_id)
            state = run.states.get(name)  # this process's share, kept for the next request
            if self.saved:
                run.states[name] = whole_state(unlearner_cls, state)
            path = distributed.broadcast_object(distributed.on_main(  # rank 0 publishes; a failure stops every rank
                lambda: publish(exp, run, outputs, name, request_id, ledger) if outputs is not None else None))
        except BaseException:
            if outputs is not None:
                outputs.abort()
            raise
        self._advance(exp, run.models[name], state, name, ledger, path)
        return run.results

    def _advance(self, exp: Experiment, model, state, name: str, ledger: Ledger, path: Path | None) -> None:
        """The next request starts from this one's result, on its remaining data."""
        chain = self.chain
        chain.train, chain.original, chain.ledger = exp.remaining, model, ledger
        chain.original_row = {"train_time_s": None, "checkpoint": str(path) if path else None}
        chain.method_state = (name, state) if state else None
        chain.checkpoint = read_checkpoint(path) if path and distributed.is_main() else None
        self.last_checkpoint = path
        self.applied.append(exp.request)
        self.requests += 1

    def save(self, path, overwrite: bool = False) -> Path:
        """Write the current model as a safe checkpoint (with its ledger) at ``path``, atomically;
        an existing file is replaced only with ``overwrite``."""
        chain, config = self.chain, self.config
        if chain.original is None:
            raise UnlearnInputError("the session has no model yet: apply a request first")
        if Path(path).exists() and not overwrite:
            raise UnlearnInputError(f"{shown(str(path))} exists; save(..., overwrite=True) replaces it")
        if not distributed.is_main():  # rank 0 writes
            return Path(path)
        meta = checkpoint_meta(config, chain.train, role="unlearned", ledger=chain.ledger.to_meta(),
                               source_rows=chain.source_rows, unlearner=chain.method_state[0] if chain.method_state else None)
        save_checkpoint(path, chain.original.state_dict(), meta, current_codes(chain.train, meta))
        return Path(path)


def run_unlearn(model=None, dataset=None, config_file_list=None, config_dict=None, saved: bool = True) -> dict:
    """Run one unlearning request (a session of one); returns the results dict.

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
    return UnlearnSession.open(model, dataset, config_file_list, config_dict, saved).forget()


@dataclass
class RunRows:
    """What the rows of one run produced: ``results`` (JSON-able), each row's model and carried
    method state, and the (forgotten, never-seen) probabilities the picture draws."""

    results: dict
    models: dict
    states: dict
    scores: dict


def whole_state(cls: type, state: dict | None) -> dict | None:
    """The method state as one process would hold it: the tensors a method splits across a
    process group (its ``sharded_state`` keys) gathered on rank 0 (None on the other ranks)."""
    if state is None or not distributed.active():
        return state
    keys = getattr(cls, "sharded_state", ())
    whole = {k: (distributed.gather_rows(v.cpu()) if k in keys else v) for k, v in state.items()}
    return whole if distributed.is_main() else None


def run_rows(exp: Experiment, plan, unlearner_cls) -> RunRows:
    """Run the plan's rows on ``exp``, evaluate them on the same loaders, show the table."""
    config = exp.config
    rows: dict[str, dict] = {"Original": exp.original_row}
    models: dict[str, torch.nn.Module] = {"Original": exp.original}
    states: dict[str, dict | None] = {}
    if config["evaluate"]:  # rows compared with each other share the validation loader, built before any of them
        exp.loaders.valid  # noqa: B018
    for name, cls, cfg in plan:
        stage("unlearning: %s ...", name)
        outcome = run_unlearner(exp, cls, cfg)
        models[name], states[name] = outcome.model, outcome.state
        rows[name] = {"time_s": outcome.time_s, **outcome.info}
        stage("unlearning: %s done in %.2f s", name, outcome.time_s)
    setup = None
    if config["evaluate"] and distributed.is_main():
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
    if setup is None:
        return RunRows(results, models, states, {})
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


def next_ledger(exp: Experiment, request_id: str) -> Ledger:
    """The ledger after ``exp``'s request (an injected noise request is not a deletion)."""
    ledger = Ledger(exp.ledger.salt, list(exp.ledger.entries))
    if len(exp.request) > 0 and not exp.request.inject:
        ledger.record(exp.train, exp.request, request_id)
    return ledger


def publish(exp: Experiment, run: RunRows, outputs: RunOutputs, unlearner: str, request_id: str,
            ledger: Ledger) -> Path:
    """Stage the checkpoints, publish everything, append the audit record; returns where the
    unlearned checkpoint now is."""
    config = exp.config
    results, models, states, scores = run.results, run.models, run.states, run.scores
    stem = f"{config['dataset']}-{config['model']}"
    common = {"source_rows": exp.source_rows}
    if exp.original_row.get("train_time_s") is not None and config["save_original"]:  # trained by this run
        name = f"{stem}-original.pth"
        save_checkpoint(outputs.path(name), models["Original"].state_dict(),
                        checkpoint_meta(config, exp.train, role="original", ledger=exp.ledger.to_meta(), **common),
                        current_codes(exp.train, {"ledger": exp.ledger.to_meta()}))
        results["rows"]["Original"]["checkpoint"] = str(outputs.final(name))
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
    if not outputs.publish(results, picture):  # every output is published, with or without a picture
        stage("picture: skipped (%s)", "matplotlib is not installed" if scores else "evaluate is off or no pair was forgotten")
    append_audit(outputs.audit, record)
    stage("outputs: %s (results: %s); audit record appended to %s", outputs.run_dir, outputs.results, outputs.audit)
    return outputs.final(name)


def _params_of(config, unlearner: str) -> dict:
    params = get_unlearner(unlearner).params_class.from_config(config)
    return json.loads(json.dumps(dataclasses.asdict(params), default=str))
