"""Checkpoints: safe format, atomic writes, and loading Θ_a into the pipeline only where it fits."""
from __future__ import annotations

import hashlib
import json
import os
import stat

import pytest
import torch
from recbole.data.interaction import Interaction
from recbole.trainer import Trainer

from conftest import make_config, tiny_config_dict, tiny_experiment
from recbole_unlearn.checkpoint import atomic_write, load_checkpoint, save_checkpoint
from recbole_unlearn.errors import UnlearnInputError
from recbole_unlearn.quick_start import checkpoint_meta, prepare
from recbole_unlearn.session import run_unlearn


def digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def all_scores(model) -> torch.Tensor:
    """Full ranking scores of every user, [n_users, n_items]."""
    with torch.no_grad():
        model.eval()
        users = torch.arange(model.n_users)
        return model.full_sort_predict(Interaction({model.USER_ID: users})).view(model.n_users, -1)


def original_checkpoint(tmp_path, model: str = "ENMF"):
    exp = tiny_experiment(model, forget="private")
    path = tmp_path / f"{model}-original.pth"
    save_checkpoint(path, exp.original.state_dict(), checkpoint_meta(exp.config, exp.train, role="original"))
    return exp, path


def test_roundtrip_is_exact_safe_and_leaves_no_temp_file(tmp_path):
    exp, path = original_checkpoint(tmp_path)
    state, meta = load_checkpoint(path)
    original = exp.original.state_dict()
    assert state.keys() == original.keys()
    for k, v in original.items():
        assert torch.equal(state[k], v), k
    assert meta == checkpoint_meta(exp.config, exp.train, role="original")
    raw = torch.load(path, weights_only=True)  # plain tensors and strings only
    assert json.loads(raw["meta_json"]) == meta
    assert os.listdir(tmp_path) == [path.name]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "x.pth"
    save_checkpoint(path, {"w": torch.ones(3)}, {"n": 1})
    before = digest(path)

    def broken(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(path, broken)
    assert digest(path) == before and os.listdir(tmp_path) == ["x.pth"]


@pytest.mark.parametrize("model", ["ENMF", "LightGCN", "BPR"])
def test_pipeline_reproduces_the_original_from_a_checkpoint(tmp_path, model):
    exp, path = original_checkpoint(tmp_path, model)
    before = digest(path)
    loaded = prepare(make_config(model, forget="private", checkpoint=str(path)), saved=False)
    assert torch.equal(all_scores(loaded.original), all_scores(exp.original))
    assert loaded.original_row == {"train_time_s": None, "checkpoint": str(path)}
    assert (loaded.request.users == exp.request.users).all() and (loaded.request.items == exp.request.items).all()
    assert digest(path) == before


@pytest.mark.parametrize(
    "model, overrides, message",
    [
        ("ENMF", {"seed": 7}, "trained on other data"),  # another split
        ("ENMF", {"forget": "noise"}, "trained on other data"),  # injected pairs change D_a
        ("LightGCN", {}, "holds a 'ENMF' model, not LightGCN"),
        ("ENMF", {"embedding_size": 8}, "does not fit the model"),
    ],
)
def test_checkpoint_that_does_not_fit_is_refused(tmp_path, model, overrides, message):
    _, path = original_checkpoint(tmp_path)
    before = digest(path)
    config = make_config(model, **{"forget": "private", "checkpoint": str(path), **overrides})
    with pytest.raises(UnlearnInputError, match=message):
        prepare(config, saved=False)
    assert digest(path) == before


def test_stock_recbole_checkpoint_needs_the_opt_in(tmp_path):
    exp = tiny_experiment("ENMF", forget="private")
    path = tmp_path / "stock.pth"
    trainer = Trainer(exp.config, exp.original)  # RecBole's own writer: pickles its Config
    trainer.saved_model_file = str(path)
    trainer._save_checkpoint(0, verbose=False)
    before = digest(path)

    with pytest.raises(UnlearnInputError, match="allow_pickle_checkpoint"):
        load_checkpoint(path)
    with pytest.raises(UnlearnInputError, match="allow_pickle_checkpoint"):
        prepare(make_config("ENMF", forget="private", checkpoint=str(path)), saved=False)
    state, meta = load_checkpoint(path, allow_pickle=True)
    assert meta == {"format": "recbole", "model": "ENMF"}
    assert all(torch.equal(state[k], v) for k, v in exp.original.state_dict().items())
    # a stock checkpoint carries no data fingerprint: refused without the second opt-in
    with pytest.raises(UnlearnInputError, match="no data fingerprint"):
        prepare(make_config("ENMF", forget="private", checkpoint=str(path), allow_pickle_checkpoint=True), saved=False)
    loaded = prepare(
        make_config("ENMF", forget="private", checkpoint=str(path), allow_pickle_checkpoint=True,
                    allow_unfingerprinted_checkpoint=True), saved=False
    )
    assert torch.equal(all_scores(loaded.original), all_scores(exp.original))
    assert digest(path) == before


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", None])
def test_unreadable_checkpoints_are_input_errors(tmp_path, content):
    path = tmp_path / "bad.pth"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UnlearnInputError, match="not found" if content is None else "checkpoint"):
        load_checkpoint(path, allow_pickle=True)
    torch.save({"weights": torch.ones(2)}, path)  # safe, but not ours
    with pytest.raises(UnlearnInputError, match="not a recbole_unlearn checkpoint"):
        load_checkpoint(path)


@pytest.mark.parametrize("key", ["results", "run_dir", "audit_log"])
def test_an_output_that_is_an_input_is_refused_before_any_work(tmp_path, key):
    """``--results=<the input checkpoint>`` (or any output path equal to an input) is an
    error: nothing is trained, written or replaced."""
    target = tmp_path / "tiny-ENMF-WarmStart.pth"
    save_checkpoint(target, {"w": torch.ones(1)}, {})
    before = digest(target)
    cfg = tiny_config_dict("ENMF", unlearner="WarmStart", checkpoint=str(target), checkpoint_dir=str(tmp_path))
    cfg[key] = str(target)
    with pytest.raises(UnlearnInputError, match="is also an input"):
        run_unlearn("ENMF", "tiny", config_dict=cfg)
    assert digest(target) == before and sorted(os.listdir(tmp_path)) == [target.name]
