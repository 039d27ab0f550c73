"""The unlearner contract, shipped so that your own unlearner can be tested with it.

Subclass :class:`UnlearnerContract` in a pytest file, set ``unlearner`` (the registered name),
``models`` (default: every plugin model the unlearner does not refuse) and ``config`` (keys that
keep the method fast on the tiny dataset), and pytest runs every ``test_*`` method of the
contract for each model::

    from recbole_unlearn.testing import UnlearnerContract

    class TestMyUnlearner(UnlearnerContract):
        unlearner = "MyUnlearner"
        models = ("ENMF",)
        config = {"my_epochs": 3}

The contract runs on a tiny synthetic dataset (two taste clusters, so a few epochs learn
something and forgetting is measurable), written once per process into a temporary folder.
Methods that take ``model_name`` run once per entry of ``models`` (``pytest_generate_tests``
below; import it into your ``conftest.py`` as ``from recbole_unlearn.testing import
pytest_generate_tests`` if your tests do not have one).
"""
from __future__ import annotations

import copy
import os
import tempfile
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import torch
import yaml
from recbole.data.interaction import Interaction

from recbole_unlearn.config import Config, config_with, resource_dir
from recbole_unlearn.data.remaining import dataset_keys, pair_keys
from recbole_unlearn.model import MODELS
from recbole_unlearn.quick_start import prepare, run_unlearner
from recbole_unlearn.unlearner import get_unlearner

TINY = "tiny"
TINY_USERS, TINY_ITEMS, PER_USER = 60, 40, 14

_root: Path | None = None
_experiments: dict = {}


def write_tiny_dataset(root: Path, name: str = TINY, seed: int = 0) -> Path:
    """Write ``root/name/name.inter``; returns ``root``."""
    rng = np.random.default_rng(seed)
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    half = TINY_ITEMS // 2
    for u in range(1, TINY_USERS + 1):
        own = np.arange(1, half + 1) + (u % 2) * half
        items = set(rng.choice(own, size=PER_USER - 3, replace=False).tolist())
        while len(items) < PER_USER:
            items.add(int(rng.integers(1, TINY_ITEMS + 1)))
        for t, i in enumerate(sorted(items)):
            lines.append(f"u{u}\ti{i}\t{1 + (u + i) % 5}\t{t}")
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.inter").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def tiny_config(root: str | Path, model: str, **overrides) -> dict:
    """Config keys for a fast run on the tiny dataset under ``root`` (checkpoints under it)."""
    cfg = {
        "data_path": str(root),
        "checkpoint_dir": str(Path(root) / "saved"),
        "log_wandb": False,
        "show_progress": False,
        "state": "ERROR",
        # no early stopping: fixed epochs make the models memorise the injected noise pairs
        "epochs": 60,
        "eval_step": 0,
        "embedding_size": 16,
        "forget_users": 12,
        "train_batch_size": 16 if model == "ENMF" else 128,
        "learning_rate": 0.02 if model == "ENMF" else 0.01,
        "eval_batch_size": 4096,
        "seed": 2020,
        "topk": [5, 10, 20],
        "use_gpu": False,  # the contract runs on the CPU; tests marked gpu compare a CUDA run with it
    }
    cfg.update(overrides)
    return cfg


def tiny_experiment(model: str, root: str | Path | None = None, **overrides):
    """A prepared Experiment (split, request, trained Θ_a) on the tiny dataset, cached per
    (root, model, overrides); callers get a deep copy of Θ_a, so no test alters another's."""
    global _root
    if root is None:
        if _root is None:
            _root = write_tiny_dataset(Path(tempfile.mkdtemp(prefix="recbole-unlearn-tiny-")))
        root = _root
    key = (str(root), model, tuple(sorted(overrides.items())))
    if key not in _experiments:
        config = Config(model=model, dataset=TINY, config_dict=tiny_config(root, model, **overrides))
        _experiments[key] = prepare(config, saved=False)
    exp = copy.copy(_experiments[key])
    exp.original = copy.deepcopy(exp.original)
    return exp


def served_models(unlearner: str) -> list[str]:
    """The plugin models ``unlearner`` does not refuse (``Unlearner.refusal``)."""
    cls = get_unlearner(unlearner)
    return [m.__name__ for m in MODELS.values() if not cls.refusal(m)]


def pytest_generate_tests(metafunc):
    """Contract classes run each test once per entry of their ``models`` (None: every plugin
    model the unlearner serves); ``refused_name`` runs once per plugin model it refuses."""
    cls = metafunc.cls
    if cls is None or not getattr(cls, "unlearner", ""):
        return
    if "model_name" in metafunc.fixturenames:
        models = cls.models if getattr(cls, "models", None) is not None else served_models(cls.unlearner)
        metafunc.parametrize("model_name", list(models))
    if "refused_name" in metafunc.fixturenames:
        refused = [m.__name__ for m in MODELS.values() if m.__name__ not in served_models(cls.unlearner)]
        metafunc.parametrize("refused_name", refused or [None])


def forgotten_rank(model, request) -> float:
    """Mean fraction of items a forgotten pair's item outranks in its user's full ranking.

    Scale-free (BPR scores carry no calibrated probability), so it works for every model.
    """
    with torch.no_grad():
        model.eval()
        users = torch.as_tensor(request.users)
        scores = model.full_sort_predict(Interaction({model.USER_ID: users})).view(len(users), -1)
        own = scores[torch.arange(len(users)), torch.as_tensor(request.items)]
        return (scores[:, 1:] < own[:, None]).float().mean().item()


def forgotten_probs(model, request) -> torch.Tensor:
    with torch.no_grad():
        model.eval()
        return model.predict_proba(torch.as_tensor(request.users), torch.as_tensor(request.items))


def score_gap_closed(exp, model) -> float:
    """The share of the gap between Θ_a's and an exact retrain's mean predicted probability of
    the forgotten pairs that ``model`` closes (1 where it lands on the retrain's); fails when Θ_a
    does not remember the pairs (a gap under 0.05), where no share means anything."""
    retrain = run_unlearner(exp, get_unlearner("retrain"))
    original, gold, ours = (float(forgotten_probs(m, exp.request).mean())
                            for m in (exp.original, retrain.model, model))
    assert original - gold > 0.05, (original, gold)
    return (original - ours) / (original - gold)


class UnlearnerContract:
    unlearner: str = ""
    #: the models to run on; None: every plugin model the unlearner does not refuse
    models: tuple[str, ...] | None = None
    config: dict = {}
    #: how far the forgotten (noise) pairs' mean rank percentile must fall below Θ_a's
    #: (on the tiny data Θ_a ranks them at about 0.65, Retrain at about 0.35)
    min_rank_drop: float = 0.1
    #: the YAML file documenting the unlearner's keys (None: the shipped properties/unlearner/<Name>.yaml)
    properties_file: str | None = None

    def experiment(self, model_name: str, forget: str = "noise"):
        """A prepared experiment on the tiny dataset (cached; each call gets its own copy of
        Θ_a).  Override it to run the contract on your own data."""
        return tiny_experiment(model_name, forget=forget, **self.config)

    def run(self, exp):
        return run_unlearner(exp, get_unlearner(self.unlearner))

    def test_forgotten_pairs_score_drops(self, model_name):
        exp = self.experiment(model_name)
        before = forgotten_rank(exp.original, exp.request)
        after = forgotten_rank(self.run(exp).model, exp.request)
        assert after < before - self.min_rank_drop, (before, after)

    def test_result_no_longer_trained_on_request(self, model_name):
        exp = self.experiment(model_name, forget="private")
        outcome = self.run(exp)
        forgotten = pair_keys(exp.request.users, exp.request.items, exp.train.item_num)
        assert not np.isin(dataset_keys(outcome.remaining), forgotten).any()
        assert not np.isin(outcome.model.trained_pair_keys().cpu().numpy(), forgotten).any()
        assert outcome.time_s > 0

    def test_original_is_not_modified(self, model_name):
        exp = self.experiment(model_name, forget="private")
        before = {k: v.clone() for k, v in exp.original.state_dict().items()}
        self.run(exp)
        for k, v in exp.original.state_dict().items():
            assert torch.equal(v, before[k]), k

    def test_empty_request_is_a_no_op(self, model_name):
        exp = self.experiment(model_name, forget="private")
        empty = np.zeros(0, dtype=np.int64)
        exp.request = replace(exp.request, users=empty, items=empty)
        outcome = self.run(exp)
        for k, v in exp.original.state_dict().items():
            assert torch.equal(outcome.model.state_dict()[k], v), k

    def test_a_deleted_user_is_left_the_row_a_retrain_has(self, model_name):
        """A user whose every training pair is forgotten ends with the ego row the model says a
        retrain leaves such a user (``rows_without_pairs``; for a BPR model, Retrain's own:
        the user is in no batch): nothing the model learnt of that user stays in Θ_u.  For
        methods with ``resets_deleted_users``."""
        import pytest

        cls = get_unlearner(self.unlearner)
        if not cls.resets_deleted_users:
            pytest.skip(f"{cls.__name__} builds fresh models itself")
        exp = self.experiment(model_name, forget="users")
        deleted = torch.as_tensor(exp.request.whole_users)
        assert len(deleted)
        outcome = self.run(exp)
        retrained = run_unlearner(exp, get_unlearner("retrain"), config_with(exp.config, epochs=2)).model
        expected = outcome.model.rows_without_pairs(deleted, lambda: retrained.ego_embeddings().detach()[deleted])
        assert torch.equal(outcome.model.ego_embeddings().detach()[deleted], expected)
        assert not torch.equal(outcome.model.ego_embeddings().detach()[deleted],
                               exp.original.ego_embeddings().detach()[deleted])
        assert outcome.info["users_reset"] == len(deleted)

    def test_a_refused_model_gets_one_line_naming_another_method(self, refused_name):
        """A plugin model the unlearner refuses is refused when the method is built, with one
        line that names a registered method which serves it."""
        import pytest

        from recbole_unlearn.errors import UnlearnInputError

        if refused_name is None:
            pytest.skip(f"{self.unlearner} serves every plugin model")
        from recbole_unlearn.unlearner import unlearner_names

        cls = get_unlearner(self.unlearner)
        exp = tiny_experiment(refused_name, forget="private")
        try:
            cls(exp.config, exp.original)
        except UnlearnInputError as e:
            message = str(e)
        else:
            raise AssertionError(f"{cls.__name__} declares it refuses {refused_name} but was built")
        assert "\n" not in message and message == cls.refusal(type(exp.original))
        assert any(n in message for n in unlearner_names() if n != cls.__name__), message

    def test_yaml_keys_match_params(self):
        """The unlearner's property file (``properties_file``, else the shipped one) documents
        exactly its parameters."""
        cls = get_unlearner(self.unlearner)
        path = Path(self.properties_file or resource_dir("properties") / "unlearner" / f"{cls.__name__}.yaml")
        assert path.is_file(), f"{cls.__name__} has no property file {path}; set properties_file"
        keys = set((yaml.safe_load(path.read_text()) or {}).keys())
        assert keys == {f.name for f in fields(cls.params_class)}

    def test_lookup_is_case_insensitive(self):
        cls = get_unlearner(self.unlearner)
        assert get_unlearner(cls.__name__.upper()) is cls
        assert get_unlearner(cls.__name__.lower()) is cls


# ---- the process-group check: N processes give one process's result ---------------------------
#: (model, unlearner, keys) of :func:`unlearned_states`: each method that splits its work
GROUP_ROWS = (
    ("ENMF", "AltEraser", {}),  # erase pass: cache and solves split by id
    ("ENMF", "AltEraser", {"alt_max_passes": 2}),  # and full passes over every user and item
    ("LightGCN", "IFRU", {}),  # triples split, products summed by all-reduce
    ("ENMF", "SISA", {"n_shards": 4, "shard_reuse": False}),  # shards dealt out to the ranks
    ("LightGCN", "RecEraser", {"n_shards": 3, "shard_reuse": False}),
    ("ENMF", "Retrain", {}),  # RecBole's DDP loop in a group: another training, the same on every rank
)


def unlearned_states(root: str | Path, rows=GROUP_ROWS, **keys) -> list[dict]:
    """Per row, Θ_u's state_dict (on the CPU), the method state as one process holds it (rank
    0; None on the others) and the method's info, for the tiny dataset's private request (config
    ``keys`` added, e.g. ``use_gpu``).  In a process group every rank calls this together."""
    from recbole_unlearn.config import config_with
    from recbole_unlearn.session import whole_state

    out = []
    for model, unlearner, own in rows:
        exp = tiny_experiment(model, root=root, **keys)
        cls = get_unlearner(unlearner)
        outcome = run_unlearner(exp, cls, config_with(exp.config, **own))
        out.append({"model": {k: v.detach().cpu().clone() for k, v in outcome.model.state_dict().items()},
                    "state": whole_state(cls, outcome.state), "info": outcome.info})
    return out


def group_member(root: str, folder: str, rows=GROUP_ROWS, backend: str = "gloo", use_gpu: bool = False) -> None:
    """One process of a group (started by :func:`recbole_unlearn.distributed.spawn`): joins the
    group (``backend``; nccl: one CUDA device per process, ``use_gpu``), runs
    :func:`unlearned_states` and saves what it got as ``<folder>/rank<r>.pt``."""
    from recbole_unlearn import distributed

    torch.set_num_threads(1)
    keys = {"use_gpu": True} if use_gpu else {}
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    for model in {m for m, _, _ in rows}:  # Θ_a trained alone first (in a group it would train with DDP)
        tiny_experiment(model, root=root, **keys)
    distributed.setup({"backend": backend})
    torch.save(unlearned_states(root, rows, **keys), Path(folder) / f"rank{distributed.rank()}.pt")


def original_checkpoint(root: str | Path, path: str | Path, model: str = "ENMF") -> str:
    """Save the tiny dataset's Θ_a (trained alone, :func:`tiny_experiment`) as a safe checkpoint."""
    from recbole_unlearn.checkpoint import save_checkpoint
    from recbole_unlearn.quick_start import checkpoint_meta

    exp = tiny_experiment(model, root=root)
    save_checkpoint(path, exp.original.state_dict(), checkpoint_meta(exp.config, exp.train, role="original"))
    return str(path)


def session_chain(root: str, folder: str, checkpoint: str, requests: int = 2) -> dict:
    """A session of ``requests`` AltEraser requests on the tiny dataset from the original
    ``checkpoint``, published under ``folder``; returns {"model": the final state_dict,
    "checkpoints": the published checkpoint paths, "results": each request's results}.  In a
    process group every rank calls it together (see :func:`session_member`)."""
    from recbole_unlearn.session import UnlearnSession

    keys = tiny_config(root, "ENMF", unlearner="AltEraser", checkpoint_dir=str(Path(folder) / "saved"),
                       checkpoint=checkpoint)
    session = UnlearnSession.open("ENMF", TINY, config_dict=keys)
    paths, results = [], []
    for k in range(requests):
        results.append(session.forget(**({} if k == 0 else {"forget": "users", "forget_fraction": 0.1, "forget_seed": k})))
        paths.append(str(session.last_checkpoint))
    return {"model": {k: v.detach().clone() for k, v in session.chain.original.state_dict().items()},
            "checkpoints": paths, "results": results}


def session_member(root: str, folder: str, checkpoint: str) -> None:
    """One process of a group running :func:`session_chain`; saves ``<folder>/session-rank<r>.pt``."""
    from recbole_unlearn import distributed

    torch.set_num_threads(1)
    distributed.setup({"backend": "gloo"})
    torch.save(session_chain(root, folder, checkpoint), Path(folder) / f"session-rank{distributed.rank()}.pt")
