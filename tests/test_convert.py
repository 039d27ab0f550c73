"""A checkpoint written by stock RecBole's own Trainer converts once into the safe format and
then unlearns without any unpickling."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from recbole.config import Config as RecBoleConfig
from recbole.data import create_dataset, data_preparation
from recbole.trainer import Trainer
from recbole.utils import get_model, init_seed

from conftest import TINY, tiny_config_dict
from recbole_unlearn.checkpoint import read_checkpoint
from recbole_unlearn.cli import main
from recbole_unlearn.config import Config
from recbole_unlearn.convert import _all_scores


def stock_checkpoint(tmp: Path, model: str) -> tuple[Path, torch.nn.Module]:
    """Train ``model`` for two epochs with stock RecBole (its Config, model class and Trainer)."""
    keys = {k: v for k, v in tiny_config_dict(model, epochs=2, checkpoint_dir=str(tmp / "stock")).items()
            if k not in ("forget_users",)}
    config = RecBoleConfig(model=model, dataset=TINY, config_dict=keys)
    init_seed(config["seed"], config["reproducibility"])
    train, valid, _ = data_preparation(config, create_dataset(config))
    net = get_model(model)(config, train._dataset).to(config["device"])
    trainer = Trainer(config, net)
    trainer.fit(train, valid, saved=True, show_progress=False)
    return Path(trainer.saved_model_file), net


@pytest.mark.parametrize("model", ["ENMF", "LightGCN"])
def test_stock_checkpoint_converts_scores_equal_and_unlearns(tmp_path, capsys, model):
    stock, net = stock_checkpoint(tmp_path, model)
    before = hashlib.sha256(stock.read_bytes()).hexdigest()
    keys = tiny_config_dict(model, epochs=3, checkpoint_dir=str(tmp_path / "ck"), forget_users=3)
    args = [f"--{k}={v}" for k, v in keys.items()] + [f"--dataset={TINY}", f"--model={model}"]
    out = tmp_path / "safe.pth"
    capsys.readouterr()
    assert main([f"--convert_checkpoint={stock}", f"--out={out}", *args]) == 0
    assert "converted" in capsys.readouterr().out
    converted = read_checkpoint(out)  # weights_only: no pickle needed any more
    assert converted.meta["role"] == "original" and converted.meta["fingerprint"]
    assert converted.meta["converted_from"]["sha256"] == before
    config = Config(model, TINY, config_dict=keys)
    init_seed(config["seed"], config["reproducibility"])
    train = create_dataset(config).build()[0]
    ours = config.model_class(config, train)
    ours.load_state_dict(converted.state_dict, strict=False)
    net.load_state_dict(torch.load(stock, weights_only=False)["state_dict"])
    assert torch.allclose(_all_scores(ours, train.user_num), _all_scores(net.cpu(), train.user_num), atol=1e-5)
    assert main([f"--checkpoint={out}", *args]) == 0  # unlearns from the converted checkpoint
    results = json.loads(next((tmp_path / "ck").glob("*/results.json")).read_text())
    assert results["rows"]["Original"]["checkpoint"] == str(out)
    assert hashlib.sha256(stock.read_bytes()).hexdigest() == before
    assert main([f"--convert_checkpoint={stock}", f"--out={out}", *args]) == 2  # never overwritten
    assert "exists; give overwrite=True" in capsys.readouterr().err
