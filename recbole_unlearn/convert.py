"""One-off conversion of a stock RecBole checkpoint into the plugin's safe format.

RecBole's ``Trainer`` pickles its Config inside the checkpoint, so reading one runs code: this
is the only place that unpickles, and only for a file the user names as trusted.  The weights
are mapped onto the plugin's model of the same name, the converted model is checked to score
every (user, item) pair of the data exactly as RecBole's own model class does, and the result is
written in the safe format with the data fingerprint of the training split, so later runs load
it without ``allow_pickle_checkpoint``.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from recbole.data import create_dataset
from recbole.data.interaction import Interaction
from recbole.utils import get_model as recbole_model
from recbole.utils import init_seed

from recbole_unlearn._compat import load_stock_recbole_checkpoint
from recbole_unlearn.checkpoint import file_sha256, save_checkpoint
from recbole_unlearn.config import Config
from recbole_unlearn.data.ledger import Ledger
from recbole_unlearn.errors import UnlearnInputError
from recbole_unlearn.options import shown
from recbole_unlearn.quick_start import checkpoint_meta, current_codes

logger = logging.getLogger(__name__)
TOLERANCE = 1e-5


def _all_scores(model, n_users: int) -> torch.Tensor:
    """Full-ranking scores of every user, [n_users, n_items]."""
    with torch.no_grad():
        model.eval()
        users = torch.arange(n_users)
        return model.full_sort_predict(Interaction({model.USER_ID: users})).view(n_users, -1)


def convert_checkpoint(stock: str, out: str, model=None, dataset=None, config_file_list=None,
                       config_dict=None) -> dict:
    """Convert trusted stock RecBole checkpoint ``stock`` into safe checkpoint ``out``.

    The split is rebuilt from this run's config (give the dataset, seed and split the model was
    trained with).  Returns a summary: model, users, items, the largest score difference.

    Raises:
        UnlearnInputError: unreadable or foreign file, a model the plugin does not have, weights
            that do not fit, scores that differ, or an ``out`` that exists (without
            ``overwrite``) or is the input.
    """
    stock_path, out_path = Path(stock), Path(out)
    if not stock_path.is_file():
        raise UnlearnInputError(f"checkpoint not found: {shown(str(stock_path))}")
    try:
        payload = load_stock_recbole_checkpoint(stock_path)
    except Exception as e:  # whatever a foreign pickle raises
        raise UnlearnInputError(f"cannot read {shown(str(stock_path))} as a RecBole checkpoint: {type(e).__name__}") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("state_dict"), dict):
        raise UnlearnInputError(f"{shown(str(stock_path))} is not a RecBole checkpoint")
    stock_config = payload.get("config")
    name = model or (stock_config["model"] if stock_config is not None else None)
    config = Config(name, dataset or (stock_config["dataset"] if stock_config is not None else None),
                    config_file_list, config_dict)
    if out_path.resolve() == stock_path.resolve():
        raise UnlearnInputError("out must not be the input checkpoint")
    if out_path.exists() and not config["overwrite"]:
        raise UnlearnInputError(f"out {shown(str(out_path))} exists; give overwrite=True to replace it")
    init_seed(config["seed"], config["reproducibility"])
    train = create_dataset(config).build()[0]
    ours = config.model_class(config, train)
    theirs = recbole_model(config["model"])(config, train)
    state = payload["state_dict"]
    for target in (ours, theirs):
        try:
            missing, unexpected = target.load_state_dict(state, strict=False)
        except RuntimeError as e:
            raise UnlearnInputError(f"the checkpoint's weights do not fit {config['model']} on this data: {shown(str(e))}") from None
        if missing or [k for k in unexpected if not k.startswith("restore_")]:
            raise UnlearnInputError(f"the checkpoint's weights do not fit: missing {missing}, unexpected {unexpected}")
    gap = float((_all_scores(ours, train.user_num) - _all_scores(theirs, train.user_num)).abs().max())
    if gap > TOLERANCE:
        raise UnlearnInputError(f"the converted model scores differ from RecBole's by up to {gap:.3g}; nothing written")
    meta = checkpoint_meta(config, train, role="original", ledger=Ledger().to_meta(),
                 converted_from={"path": str(stock_path.resolve()), "sha256": file_sha256(stock_path)})
    save_checkpoint(out_path, ours.state_dict(), meta, current_codes(train, meta))
    return {"model": config["model"], "users": train.user_num, "items": train.item_num, "max_score_gap": gap,
            "out": str(out_path)}
