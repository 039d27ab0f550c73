"""UnlearnRec: the contract, the encoder's defining properties and the saved encoder's reuse."""
from __future__ import annotations

import pytest
import torch

from conftest import make_config, tiny_experiment
from recbole_unlearn.checkpoint import load_checkpoint
from recbole_unlearn.quick_start import run_unlearner
from recbole_unlearn.unlearner._influence_encoder import InfluenceEncoder, forget_adjacency
from recbole_unlearn.unlearner.base import UnlearnTask
from recbole_unlearn.unlearner.unlearnrec import UnlearnRec
from unlearner_contract import UnlearnerContract

FAST = {"pretrain_epochs": 6, "finetune_epochs": 3, "aux_batch_size": 256}


def scores(model, request) -> torch.Tensor:
    """Raw scores ŷ of the request's pairs, [n]."""
    with torch.no_grad():
        model.eval()
        u_e, i_e = model.propagate()
        return (u_e[torch.as_tensor(request.users)] * i_e[torch.as_tensor(request.items)]).sum(-1)


def run(exp, **keys):
    """UnlearnRec on ``exp`` with extra keys (the experiment's own config underneath)."""
    config = make_config(exp.config["model"], forget=exp.config["forget"], **{**FAST, **keys})
    return run_unlearner(exp, UnlearnRec, config)


class TestUnlearnRec(UnlearnerContract):
    unlearner = "UnlearnRec"
    config = FAST


def test_zero_encoder_output_and_no_finetune_leave_the_model_unchanged(tmp_path):
    """Untrained encoder with β = 0 (Z = 0, so Δ = MLP(0) = 0) and no fine-tune: Θ_u = Θ_a."""
    exp = tiny_experiment("LightGCN", forget="noise")
    out = run(exp, pretrain_epochs=0, withdrawal_init=0.0, finetune_epochs=0,
              encoder_path=str(tmp_path / "enc.pth"))
    for k, v in exp.original.state_dict().items():
        assert torch.equal(out.model.state_dict()[k], v), k


def test_trained_encoder_lowers_forgotten_scores(tmp_path):
    """After pre-training, the encoder pass alone (no fine-tune) scores the forgotten pairs
    below Θ_a — and below what switching the graph to D_r alone gives — and changes only the
    rows of the request's users and items."""
    exp = tiny_experiment("LightGCN", forget="noise")
    path = str(tmp_path / "enc.pth")
    graph_only = run(exp, pretrain_epochs=0, withdrawal_init=0.0, finetune_epochs=0, encoder_path=path).model
    out = run(exp, pretrain_epochs=10, finetune_epochs=0, encoder_path=str(tmp_path / "trained.pth"))
    before, switched, after = scores(exp.original, exp.request), scores(graph_only, exp.request), scores(out.model, exp.request)
    assert after.mean() < switched.mean() < before.mean(), (before.mean(), switched.mean(), after.mean())
    assert (after < before).float().mean() > 0.9
    changed = (out.model.user_embedding.weight != exp.original.user_embedding.weight).any(1)
    assert set(torch.nonzero(changed).flatten().tolist()) <= set(exp.request.users.tolist())


def test_saved_encoder_reloads_with_identical_outputs(tmp_path):
    exp = tiny_experiment("LightGCN", forget="private")
    path = tmp_path / "enc.pth"
    first = run(exp, encoder_path=str(path))
    assert first.info["encoder_reused"] is False and first.info["pretrain_time_s"] > 0
    state, meta = load_checkpoint(path)  # torch.load(weights_only=True) underneath
    assert torch.load(path, weights_only=True)["state_dict"].keys() == state.keys()
    assert meta["fingerprint"] and meta["original"] and meta["pretrain_time_s"] > 0
    model = exp.original
    encoder = InfluenceEncoder(model.n_users + model.n_items, model.latent_dim, FAST.get("encoder_layers", 2))
    encoder.load_state_dict(state)
    adj = forget_adjacency(exp.request.users, exp.request.items, model.n_users, model.n_items)
    config = make_config("LightGCN", forget="private", **FAST, encoder_path=str(path))
    unlearner = UnlearnRec(config, model)
    unlearner.pretrain(UnlearnTask(config, model, exp.train, exp.request, exp.valid_r))
    with torch.no_grad():
        assert torch.equal(encoder(adj, model.final_embeddings()), unlearner.encoder(adj, model.final_embeddings()))
    # a second request run reuses it (no pre-training) and gives the same model
    second = run(exp, encoder_path=str(path))
    assert second.info["encoder_reused"] is True and "pretrain_time_s" not in second.info
    assert second.info["encoder_pretrain_time_s"] == pytest.approx(meta["pretrain_time_s"])
    for k, v in first.model.state_dict().items():
        assert torch.equal(second.model.state_dict()[k], v), k


def test_encoder_of_another_original_is_not_reused(tmp_path):
    """A saved encoder fits one Θ_a: a changed original model pre-trains again."""
    exp = tiny_experiment("LightGCN", forget="private")
    path = str(tmp_path / "enc.pth")
    run(exp, encoder_path=path)
    with torch.no_grad():
        exp.original.user_embedding.weight[1] += 0.01
    again = run(exp, encoder_path=path)
    assert again.info["encoder_reused"] is False and again.info["pretrain_time_s"] > 0


def test_a_model_without_a_graph_is_refused_before_any_training(tmp_path, capsys):
    """ENMF and BPR have no graph: one error line naming a method that serves them, exit 2,
    nothing trained or written."""
    from recbole_unlearn.cli import main
    from recbole_unlearn.model import ENMF, LightGCN

    assert UnlearnRec.refusal(LightGCN) is None
    assert "use AltEraser" in UnlearnRec.refusal(ENMF)
    out = tmp_path / "out"
    code = main(["--model=ENMF", "--unlearner=unlearnrec", f"--checkpoint_dir={out}", f"--run_dir={out / 'run'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["error: " + UnlearnRec.refusal(ENMF)]
    assert not out.exists()


def test_unsupported_model_is_refused():
    from recbole_unlearn.errors import UnlearnInputError

    exp = tiny_experiment("LightGCN", forget="private")
    unlearner = UnlearnRec(exp.config, exp.original)
    task = UnlearnTask(exp.config, torch.nn.Linear(2, 2), exp.train, exp.request, exp.valid_r)
    with pytest.raises(UnlearnInputError, match="model protocol"):
        unlearner.pretrain(task)


@pytest.mark.parametrize("key, value", [("idm_norm", "rows"), ("pretrain_requests", "items"),
                                        ("unlearn_partner", "random")])
def test_unknown_choice_is_refused_naming_the_allowed_words(tmp_path, key, value):
    from recbole_unlearn.errors import UnlearnInputError

    exp = tiny_experiment("LightGCN", forget="private")
    with pytest.raises(UnlearnInputError, match=f"{key} must be one of .*not '{value}'"):
        run(exp, **{key: value, "encoder_path": str(tmp_path / "enc.pth")})
    assert not (tmp_path / "enc.pth").exists()
