"""The data layer: the remaining data D_r, generated forget requests and ``.forget`` files."""
from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import pytest
import torch
from recbole.data import create_dataset
from recbole.utils import init_seed

from conftest import make_config, tiny_experiment
from recbole_unlearn.config import config_with
from recbole_unlearn.data.forget import ForgetRequest, build_request, users_request
from recbole_unlearn.data.remaining import dataset_keys, pair_keys, remaining_dataset, select_rows
from recbole_unlearn.errors import UnlearnInputError

_splits: dict = {}


def split(**overrides):
    """(config, full, train, valid, test) exactly as ``prepare`` builds them, without training."""
    key = tuple(sorted(overrides.items()))
    if key not in _splits:
        config = make_config("ENMF", **overrides)
        init_seed(config["seed"], config["reproducibility"])
        full = create_dataset(config)
        _splits[key] = (config, full, *full.build())
    return _splits[key]


def keys_of(request: ForgetRequest, n_items: int) -> np.ndarray:
    return pair_keys(request.users, request.items, n_items)


def user_counts(ds) -> np.ndarray:
    return np.bincount(ds.inter_feat[ds.uid_field].numpy(), minlength=ds.user_num)


def tokens(ds, users, items) -> list[tuple[str, str]]:
    return [(ds.id2token(ds.uid_field, int(u)), ds.id2token(ds.iid_field, int(i))) for u, i in zip(users, items)]


# ---- D_r -------------------------------------------------------------------------------------
def test_remaining_drops_exactly_the_request():
    config, _, train, _, _ = split()
    request = build_request(config_with(config, forget="private"), train, dataset_keys(train))
    remaining = remaining_dataset(train, request)
    forgotten = keys_of(request, train.item_num)
    kept = dataset_keys(remaining)
    assert len(forgotten) > 0 and not np.isin(kept, forgotten).any()
    expected = Counter(dataset_keys(train).tolist())
    expected.subtract(Counter(forgotten.tolist()))
    assert Counter(kept.tolist()) == +expected
    assert len(kept) == len(train.inter_feat) - len(forgotten)


def test_remaining_keeps_the_id_space_when_a_user_and_an_item_lose_everything():
    _, _, train, _, _ = split()
    users = train.inter_feat[train.uid_field].numpy()
    items = train.inter_feat[train.iid_field].numpy()
    gone_user, gone_item = users[0], items[0]
    mask = (users == gone_user) | (items == gone_item)
    request = ForgetRequest("file", users[mask].astype(np.int64), items[mask].astype(np.int64))
    remaining = remaining_dataset(train, request)

    left_u = remaining.inter_feat[remaining.uid_field].numpy()
    left_i = remaining.inter_feat[remaining.iid_field].numpy()
    assert gone_user not in left_u and gone_item not in left_i
    assert (remaining.user_num, remaining.item_num) == (train.user_num, train.item_num)
    for field in (train.uid_field, train.iid_field):
        assert remaining.field2id_token[field] is train.field2id_token[field]
        assert remaining.field2token_id[field] is train.field2token_id[field]
    # a surviving pair keeps its tokens
    assert tokens(remaining, left_u[:5], left_i[:5]) == tokens(train, left_u[:5], left_i[:5])
    assert np.array_equal(dataset_keys(remaining), dataset_keys(train)[~mask])


def test_select_rows_by_mask_or_index_keeps_every_column_in_order():
    _, _, train, _, _ = split()
    mask = np.arange(len(train.inter_feat)) % 3 == 1
    by_mask, by_index = select_rows(train, mask), select_rows(train, np.flatnonzero(mask))
    for sub in (by_mask, by_index):
        assert sub.inter_feat.columns == train.inter_feat.columns
        for field in train.inter_feat.columns:
            assert torch.equal(sub.inter_feat[field], train.inter_feat[field][torch.from_numpy(mask)])
        assert (sub.user_num, sub.item_num) == (train.user_num, train.item_num)
    assert len(train.inter_feat) > len(by_mask.inter_feat) > 0  # the source is left as it was


# ---- generated requests ----------------------------------------------------------------------
def test_private_request_halves_the_history_of_n_users():
    config, _, train, _, _ = split()
    request = build_request(config_with(config, forget="private", forget_users=7), train, dataset_keys(train))
    counts = user_counts(train)
    assert request.mode == "private" and not request.inject
    assert len(request.forget_users) == 7
    per_user = Counter(request.users.tolist())
    for u in request.forget_users:
        assert per_user[int(u)] == counts[u] // 2
    assert np.isin(keys_of(request, train.item_num), dataset_keys(train)).all()
    assert len(np.unique(keys_of(request, train.item_num))) == len(request)


def test_noise_pairs_are_unseen_injected_and_then_exactly_forgotten():
    config, full, train, valid, test = split(forget="noise")
    exp = tiny_experiment("ENMF", forget="noise")
    request = exp.request
    forgotten = keys_of(request, train.item_num)
    counts = user_counts(train)
    assert request.mode == "noise" and request.inject
    assert len(request.forget_users) == config["forget_users"]
    per_user = Counter(request.users.tolist())
    for u in request.forget_users:
        assert per_user[int(u)] == counts[u] // 2
    # never seen in any split
    for ds in (full, train, valid, test):
        assert not np.isin(forgotten, dataset_keys(ds)).any()
    # injected into D_a (once each), and D_r is the clean training split again
    base = Counter(dataset_keys(train).tolist())
    assert Counter(dataset_keys(exp.train).tolist()) == base + Counter(forgotten.tolist())
    assert Counter(dataset_keys(exp.remaining).tolist()) == base


def test_users_request_core_and_edge_follow_activity():
    _, _, train, _, _ = split()
    users = train.inter_feat[train.uid_field].numpy()
    rng = np.random.default_rng(0)
    # give users different activity levels: user u keeps (u % 7) + 3 interactions at most
    keep = np.ones(len(users), dtype=bool)
    for u in np.unique(users):
        rows = np.flatnonzero(users == u)
        keep[rows[(u % 7) + 3:]] = False
    varied = train.copy(train.inter_feat[torch.from_numpy(keep)])
    counts = user_counts(varied)
    active = np.flatnonzero(counts > 0)
    for selection in ("core", "edge", "random"):
        req = users_request(varied, 0.25, selection, rng)
        chosen = req.forget_users
        assert len(chosen) == round(0.25 * len(active))
        others = np.setdiff1d(active, chosen)
        if selection == "core":
            assert counts[chosen].min() >= counts[others].max()
        elif selection == "edge":
            assert counts[chosen].max() <= counts[others].min()
        # whole users: every training pair of each chosen user, nothing else
        v_users = varied.inter_feat[varied.uid_field].numpy()
        assert len(req) == np.isin(v_users, chosen).sum()
        assert np.isin(keys_of(req, varied.item_num), dataset_keys(varied)).all()


def test_users_and_random_requests_take_the_fraction():
    config, _, train, _, _ = split()
    users = build_request(config_with(config, forget="users", forget_fraction=0.1), train, dataset_keys(train))
    assert len(users.forget_users) == round(0.1 * 60)
    assert users.details == {"selection": "random", "fraction": 0.1}
    rand = build_request(config_with(config, forget="random", forget_fraction=0.05), train, dataset_keys(train))
    n_train = len(train.inter_feat)
    assert len(rand) == round(0.05 * n_train)
    assert np.isin(keys_of(rand, train.item_num), dataset_keys(train)).all()
    with pytest.raises(UnlearnInputError, match="forget_fraction"):
        build_request(config_with(config, forget="random", forget_fraction=1.5), train, dataset_keys(train))


@pytest.mark.parametrize("mode", ["private", "noise", "users", "random"])
def test_requests_are_seeded(mode):
    config, full, train, _, _ = split()
    seen = dataset_keys(full)

    def keys(**kw):
        cfg = config_with(config, forget=mode, forget_fraction=0.1, **kw)
        return keys_of(build_request(cfg, train, seen), train.item_num)

    assert np.array_equal(keys(), keys())
    assert not np.array_equal(keys(), keys(forget_seed=12345))
    # forget_seed None falls back on seed; an explicit forget_seed wins over seed
    assert not np.array_equal(keys(seed=1), keys(seed=2))
    assert np.array_equal(keys(seed=1, forget_seed=9), keys(seed=2, forget_seed=9))


def test_bad_mode_and_options_are_input_errors():
    config, _, train, _, _ = split()
    seen = dataset_keys(train)
    with pytest.raises(UnlearnInputError, match="unknown forget mode 'everything'.*private"):
        build_request(config_with(config, forget="everything"), train, seen)
    with pytest.raises(UnlearnInputError, match="forget_file"):
        build_request(config_with(config, forget="file", forget_file=None), train, seen)
    with pytest.raises(UnlearnInputError, match="forget_missing"):
        build_request(config_with(config, forget="private", forget_missing="ignore"), train, seen)
    with pytest.raises(UnlearnInputError, match="forget_selection"):
        build_request(config_with(config, forget="users", forget_selection="middle"), train, seen)


# ---- .forget files ---------------------------------------------------------------------------
HEADER = "user_id:token\titem_id:token"


def from_file(tmp_path, text: str | None, **kw) -> ForgetRequest:
    config, _, train, _, _ = split()
    path = tmp_path / "r.forget"
    if text is not None:
        path.write_text(text, encoding="utf-8")
    config = config_with(config, forget="file", forget_file=str(path), **kw)
    return build_request(config, train, dataset_keys(train))


def train_pairs(user_token: str | None = None):
    _, _, train, _, _ = split()
    users = train.inter_feat[train.uid_field].numpy()
    items = train.inter_feat[train.iid_field].numpy()
    if user_token is not None:
        sel = users == train.token2id(train.uid_field, user_token)
        users, items = users[sel], items[sel]
    return users, items, tokens(train, users, items)


def valid_pair() -> tuple[str, str]:
    _, _, _, valid, _ = split()
    u, i = valid.inter_feat[valid.uid_field][0], valid.inter_feat[valid.iid_field][0]
    return tokens(valid, [u], [i])[0]


def test_file_pairs_and_duplicates(tmp_path):
    _, _, toks = train_pairs()
    chosen = toks[:3]
    lines = [HEADER] + [f"{u}\t{i}" for u, i in chosen] + [f"{chosen[0][0]}\t{chosen[0][1]}", ""]
    request = from_file(tmp_path, "\r\n".join(lines))
    _, _, train, _, _ = split()
    assert request.mode == "file" and len(request) == 3
    assert sorted(tokens(train, request.users, request.items)) == sorted(chosen)


def test_file_user_alone_means_all_training_pairs(tmp_path):
    _, _, train, _, _ = split()
    _, _, u3 = train_pairs("u3")
    _, _, u8 = train_pairs("u8")
    # user-only header, and the two-column form with an empty item cell (plus a repeated pair)
    one_col = from_file(tmp_path, "user_id:token\nu3\nu3\n")
    assert sorted(tokens(train, one_col.users, one_col.items)) == sorted(u3)
    two_col = from_file(tmp_path, f"{HEADER}\nu8\t\nu3\t{u3[0][1]}\nu8\t{u8[0][1]}\n")
    assert sorted(tokens(train, two_col.users, two_col.items)) == sorted(u8 + [u3[0]])


def test_file_with_byte_order_mark(tmp_path):
    _, _, toks = train_pairs()
    request = from_file(tmp_path, "\ufeff" + f"{HEADER}\n{toks[0][0]}\t{toks[0][1]}\n")
    assert len(request) == 1


@pytest.mark.parametrize(
    "text, message",
    [
        (None, "not found"),
        ("", "is empty"),
        ("\n\n", "is empty"),
        (HEADER + "\n", "header but no request lines"),
        ("user\titem\nu1\ti1\n", "header must be"),
        (f"{HEADER}\tstamp\nu1\ti1\t3\n", "header must be"),
        (f"{HEADER}\nu1\ti1\textra\n", "line 2: malformed line"),
        ("user_id:token\nu1\ti1\n", "line 2: malformed line"),
        (f"{HEADER}\n\ti1\n", "line 2: malformed line"),
        (f"{HEADER}\nu1\ti1\nnobody\ti1\n", "line 3: unknown user token 'nobody'"),
        (f"{HEADER}\nu1\ti999\n", "unknown item token 'i999'"),
        (f"{HEADER}\n[PAD]\ti1\n", "unknown user token '\\[PAD\\]'"),
    ],
)
def test_file_errors(tmp_path, text, message):
    with pytest.raises(UnlearnInputError, match=message):
        from_file(tmp_path, text)


def test_pair_not_in_training_split_is_an_error_or_dropped(tmp_path, caplog):
    vu, vi = valid_pair()
    _, _, own = train_pairs(vu)
    text = f"{HEADER}\n{own[0][0]}\t{own[0][1]}\n{vu}\t{vi}\n{own[1][0]}\t{own[1][1]}\n"
    with pytest.raises(UnlearnInputError, match=rf"1 requested .* not in the training data: \({vu}, {vi}\)"):
        from_file(tmp_path, text)
    with caplog.at_level(logging.WARNING, logger="recbole_unlearn.data.forget"):
        request = from_file(tmp_path, text, forget_missing="drop")
    _, _, train, _, _ = split()
    assert sorted(tokens(train, request.users, request.items)) == sorted(own[:2])
    assert f"({vu}, {vi})" in caplog.text and "dropping 1" in caplog.text


def test_request_empty_after_dropping(tmp_path):
    vu, vi = valid_pair()
    request = from_file(tmp_path, f"{HEADER}\n{vu}\t{vi}\n", forget_missing="drop")
    assert len(request) == 0 and request.summary() == {"mode": "file", "users": 0, "interactions": 0}
    assert request.users.dtype == np.int64 and request.items.dtype == np.int64


def test_file_that_is_not_text(tmp_path):
    config, _, train, _, _ = split()
    path = tmp_path / "r.forget"
    path.write_bytes(b"user_id:token\n\xff\xfe\x00garbage\n")
    with pytest.raises(UnlearnInputError, match="not UTF-8"):
        build_request(config_with(config, forget="file", forget_file=str(path)), train, dataset_keys(train))
