"""Forget requests, the remaining data D_r, and the loaders every row is trained and evaluated on."""
from recbole_unlearn.data.forget import ForgetRequest, build_request, load_forget_file
from recbole_unlearn.data.remaining import (
    RemainingLoaders,
    inject_pairs,
    pair_keys,
    remaining_dataset,
    train_loader,
)

__all__ = [
    "ForgetRequest",
    "build_request",
    "load_forget_file",
    "RemainingLoaders",
    "inject_pairs",
    "pair_keys",
    "remaining_dataset",
    "train_loader",
]
