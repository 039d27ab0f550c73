"""Deletion requests as a platform runs them: chains on unlearned checkpoints with a ledger,
the audit trail, outputs that are published together or not at all."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY, tiny_config_dict, write_tiny_dataset
from recbole_unlearn import run_unlearn
from recbole_unlearn.checkpoint import read_checkpoint, save_checkpoint
from recbole_unlearn.cli import main
from recbole_unlearn.config import Config
from recbole_unlearn.data.ledger import Ledger
from recbole_unlearn.data.remaining import dataset_keys, pair_keys
from recbole_unlearn.errors import UnlearnInputError
from recbole_unlearn.outputs import verify_audit
from recbole_unlearn.quick_start import current_codes, prepare
from recbole_unlearn.model.enmf_blocks import ENMFBlocks


def cfg(tmp: Path, **keys) -> dict:
    base = tiny_config_dict("ENMF", epochs=8, checkpoint_dir=str(tmp / "ck"), forget_users=3)
    base.update(keys)
    return base


def train_tokens(tmp: Path, **keys) -> list[tuple[str, str]]:
    """(user token, item token) of the training split the runs use."""
    exp = prepare(Config("ENMF", keys.get("dataset", TINY), config_dict=cfg(tmp, **keys)), saved=False)
    t = exp.train
    return [(t.id2token(t.uid_field, int(u)), t.id2token(t.iid_field, int(i)))
            for u, i in zip(t.inter_feat[t.uid_field].numpy(), t.inter_feat[t.iid_field].numpy())]


def request_file(path: Path, pairs=(), users=()) -> str:
    lines = ["user_id:token\titem_id:token", *(f"{u}\t{i}" for u, i in pairs), *users]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def chain(tmp: Path, files: list[str], **keys) -> list[dict]:
    """Request ``files[0]`` on an original trained in that run, then each further file on the
    previous run's unlearned checkpoint."""
    dataset = keys.pop("dataset", TINY)
    results, checkpoint = [], None
    for f in files:
        results.append(run_unlearn("ENMF", dataset, config_dict=cfg(
            tmp, checkpoint=checkpoint, forget="file", forget_file=f, **keys)))
        checkpoint = results[-1]["checkpoint"]
    return results


def model_of(path: str) -> dict:
    return read_checkpoint(path).state_dict


# ---- chains and the ledger -------------------------------------------------------------------
def test_retrain_after_five_chained_requests_equals_retrain_on_their_union(tmp_path):
    pairs = train_tokens(tmp_path)[::7][:15]
    whole_user = pairs[-1][0]
    files = [request_file(tmp_path / f"r{k}.forget", pairs[3 * k: 3 * k + 3]) for k in range(4)]
    files.append(request_file(tmp_path / "r4.forget", users=[whole_user]))
    steps = chain(tmp_path, files, unlearner="Retrain")
    union = request_file(tmp_path / "union.forget", pairs[:12], users=[whole_user])
    original = steps[0]["rows"]["Original"]["checkpoint"]
    at_once = run_unlearn("ENMF", TINY, config_dict=cfg(tmp_path, checkpoint=original, forget="file",
                                                         forget_file=union, unlearner="Retrain"))
    chained, once = model_of(steps[-1]["checkpoint"]), model_of(at_once["checkpoint"])
    assert chained.keys() == once.keys() and all(torch.equal(chained[k], once[k]) for k in chained)

    meta = read_checkpoint(steps[-1]["checkpoint"]).meta
    entries = meta["ledger"]["entries"]
    assert [e["request_id"] for e in entries] == [s["request_id"] for s in steps]
    assert [e["interactions"] for e in entries[:4]] == [3, 3, 3, 3] and entries[4]["whole_users"] == 1
    text = json.dumps(meta)
    assert not any(f'"{tok}"' in text for pair in pairs for tok in pair)  # no token in clear
    # a pair forgotten once never comes back: the next request starts without any of them
    nxt = prepare(Config("ENMF", TINY, config_dict=cfg(tmp_path, checkpoint=steps[-1]["checkpoint"])), saved=False)
    t = nxt.train
    kept = {(t.id2token(t.uid_field, int(u)), t.id2token(t.iid_field, int(i)))
            for u, i in zip(t.inter_feat[t.uid_field].numpy(), t.inter_feat[t.iid_field].numpy())}
    assert not kept & set(pairs[:12]) and whole_user not in {u for u, _ in kept}


def test_alteraser_carries_an_exact_item_cache_along_the_chain(tmp_path):
    pairs = train_tokens(tmp_path)[::5]
    files = [request_file(tmp_path / f"a{k}.forget", pairs[4 * k: 4 * k + 4]) for k in range(3)]
    steps = chain(tmp_path, files, unlearner="AltEraser")
    assert steps[0]["rows"]["AltEraser"].get("pretrain_time_s") is not None  # built once, on the original
    assert steps[0]["rows"]["AltEraser"]["prepare_time_s"] == steps[0]["rows"]["AltEraser"]["pretrain_time_s"]
    for step in steps[1:]:
        row = step["rows"]["AltEraser"]
        assert row["cache_carried"] and "pretrain_time_s" not in row and row["prepare_time_s"] == 0.0
    last = read_checkpoint(steps[-1]["checkpoint"])
    carried = read_checkpoint(Path(steps[-1]["checkpoint"]).parent / last.meta["state_file"]).state_dict
    exp = prepare(Config("ENMF", TINY, config_dict=cfg(tmp_path, checkpoint=steps[-1]["checkpoint"])), saved=False)
    users, items = (exp.train.inter_feat[f].long() for f in (exp.train.uid_field, exp.train.iid_field))
    fresh = ENMFBlocks(exp.original, users, items).item_sums(torch.arange(exp.original.n_items))
    assert torch.allclose(carried["item_outer"], fresh.outer, atol=1e-4)
    assert torch.allclose(carried["item_linear"], fresh.linear, atol=1e-4)


@pytest.mark.parametrize("unlearner", ["SISA", "RecEraser"])
def test_shard_methods_chain_from_their_ensemble(tmp_path, unlearner):
    pairs = train_tokens(tmp_path)[::9]
    files = [request_file(tmp_path / f"s{k}.forget", pairs[2 * k: 2 * k + 2]) for k in range(2)]
    steps = chain(tmp_path, files, unlearner=unlearner, n_shards=2, agg_epochs=3)
    assert steps[1]["rows"][unlearner]["shards_reused"] and steps[1]["rows"][unlearner]["shards_retrained"] >= 1
    exp = prepare(Config("ENMF", TINY, config_dict=cfg(tmp_path, checkpoint=steps[-1]["checkpoint"],
                                                        unlearner=unlearner)), saved=False)
    t = exp.train
    tok_u = {t.id2token(t.uid_field, u): u for u in range(1, t.user_num)}
    tok_i = {t.id2token(t.iid_field, i): i for i in range(1, t.item_num)}
    gone = pair_keys([tok_u[u] for u, _ in pairs[:4]], [tok_i[i] for _, i in pairs[:4]], t.item_num)
    assert not np.isin(exp.original.trained_pair_keys().numpy(), gone).any()
    assert not np.isin(exp.original.partition_keys.numpy(), gone).any()
    with pytest.raises(UnlearnInputError, match="shard models"):
        run_unlearn("ENMF", TINY, config_dict=cfg(tmp_path, checkpoint=steps[-1]["checkpoint"], unlearner="WarmStart"))


def benchmark_dataset(root: Path, name: str, without_user: str | None = None) -> None:
    """The tiny dataset as a fixed train/valid/test split; ``without_user``'s train rows left
    out of the train file (the platform deleted them)."""
    src = (Path(tiny_config_dict("ENMF")["data_path"]) / TINY / f"{TINY}.inter").read_text().splitlines()
    header, rows = src[0], src[1:]
    parts = {"train": rows[0::3] + rows[1::3], "valid": rows[2::6], "test": rows[5::6]}
    parts["train"] = [r for r in parts["train"] if r.split("\t")[0] != without_user]
    (root / name).mkdir(parents=True, exist_ok=True)
    for part, lines in parts.items():
        (root / name / f"{name}.{part}.inter").write_text("\n".join([header, *lines]) + "\n")


@pytest.mark.parametrize("unlearner", ["AltEraser", "SISA"])
def test_fixed_split_whose_file_lost_the_forgotten_rows(tmp_path, unlearner):
    """A whole user is forgotten and the platform deletes the user's rows from its train file:
    ids are renumbered, the checkpoint's rows follow their tokens, and the chain goes on."""
    keys = dict(benchmark_filename=["train", "valid", "test"], data_path=str(tmp_path / "data"), unlearner=unlearner,
                n_shards=2)
    benchmark_dataset(tmp_path / "data", "fixed")
    gone = (tmp_path / "data" / "fixed" / "fixed.train.inter").read_text().splitlines()[1].split("\t")[0]
    step = run_unlearn("ENMF", "fixed", config_dict=cfg(tmp_path, forget="file",
                                                        forget_file=request_file(tmp_path / "f.forget", users=[gone]), **keys))
    benchmark_dataset(tmp_path / "data", "fixed", without_user=gone)  # the rows are gone from the file
    exp = prepare(Config("ENMF", "fixed", config_dict=cfg(tmp_path, checkpoint=step["checkpoint"], **keys)), saved=False)
    assert not exp.ledger.forgotten_rows(exp.train).any()  # nothing left to remove
    saved = read_checkpoint(step["checkpoint"])
    old = {int(c): r for r, c in enumerate(saved.id_codes["user"])}
    new_codes = current_codes(exp.train, saved.meta)["user"]
    moved = [(old[int(c)], r) for r, c in enumerate(new_codes) if int(c) in old and old[int(c)] != r]
    assert moved  # the ids were renumbered, and each row followed its token
    table = "shards.0.user_embedding.weight" if unlearner == "SISA" else "user_embedding.weight"
    current = exp.original.state_dict()
    for o, n in moved:
        assert torch.equal(current[table][n], saved.state_dict[table][o])
    if unlearner == "SISA":  # the partition's pair keys were re-encoded onto the new ids
        t = exp.train
        assert set(exp.original.partition_keys.tolist()) == set(dataset_keys(t).tolist())
    nxt = run_unlearn("ENMF", "fixed", config_dict=cfg(tmp_path, checkpoint=step["checkpoint"], **keys))
    assert nxt["ledger_requests"] == 2


def test_random_split_whose_file_lost_rows_says_why(tmp_path):
    root = write_tiny_dataset(tmp_path / "data", "lossy")
    step = run_unlearn("ENMF", "lossy", config_dict=cfg(tmp_path, data_path=str(root)))
    inter = root / "lossy" / "lossy.inter"
    inter.write_text("\n".join(inter.read_text().splitlines()[:-5]) + "\n")
    with pytest.raises(UnlearnInputError, match="split is random"):
        run_unlearn("ENMF", "lossy", config_dict=cfg(tmp_path, data_path=str(root), checkpoint=step["checkpoint"]))


# ---- the audit trail -------------------------------------------------------------------------
def test_audit_trail_verifies_and_names_the_first_tampered_record(tmp_path, capsys):
    pairs = train_tokens(tmp_path)[::11]
    steps = chain(tmp_path, [request_file(tmp_path / f"t{k}.forget", pairs[k: k + 1]) for k in range(3)])
    log = tmp_path / "ck" / "audit.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["request_id"] for r in records] == [s["request_id"] for s in steps]
    assert records[0]["input_checkpoint"] is None
    assert records[1]["input_checkpoint"]["path"] == str(Path(steps[0]["checkpoint"]).resolve())
    assert records[1]["request_file_sha256"] and records[1]["evidence"]["mia_auc_unlearned"] is not None
    assert verify_audit(log)[0] and main([f"--verify_audit={log}"]) == 0
    lines = log.read_text().splitlines()
    lines[1] = lines[1].replace('"interactions": 1', '"interactions": 0')
    log.write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert main([f"--verify_audit={log}"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "record 3" in err[0]
    Path(steps[1]["checkpoint"]).write_bytes(b"changed")  # a checkpoint edited after the fact
    ok, message = verify_audit(tmp_path / "ck" / "audit.jsonl")
    assert not ok and "has changed" in message


# ---- nothing lost ----------------------------------------------------------------------------
def test_a_failing_run_publishes_nothing(tmp_path, monkeypatch):
    import recbole_unlearn.session as qs

    def boom(*a, **k):
        raise RuntimeError("evaluation failed")

    monkeypatch.setattr(qs, "evaluate_rows", boom)
    with pytest.raises(RuntimeError):
        run_unlearn("ENMF", TINY, config_dict=cfg(tmp_path))
    assert not (tmp_path / "ck").exists() or os.listdir(tmp_path / "ck") == []


def test_existing_outputs_are_kept_unless_overwrite_and_leftovers_are_removed(tmp_path):
    run_dir = tmp_path / "ck" / "mine"
    first = run_unlearn("ENMF", TINY, config_dict=cfg(tmp_path, run_dir=str(run_dir)))
    before = Path(first["checkpoint"]).read_bytes()
    with pytest.raises(UnlearnInputError, match="exists; give overwrite=True"):
        run_unlearn("ENMF", TINY, config_dict=cfg(tmp_path, run_dir=str(run_dir)))
    assert Path(first["checkpoint"]).read_bytes() == before
    stale = tmp_path / "ck" / ".other.pid999999999.staging"  # what a killed run leaves
    stale.mkdir()
    (tmp_path / "ck" / "mine" / ".results.json.pid999999999.x.tmp").write_text("{")
    second = run_unlearn("ENMF", TINY, config_dict=cfg(tmp_path, run_dir=str(run_dir), overwrite=True, seed=3))
    assert second["checkpoint"] == first["checkpoint"] and Path(first["checkpoint"]).read_bytes() != before
    assert not stale.exists() and sorted(os.listdir(run_dir)) == sorted(
        ["results.json", "results.png", "tiny-ENMF-AltEraser.pth", "tiny-ENMF-AltEraser.state.pth",
         "tiny-ENMF-original.pth"])
    two = [run_unlearn("ENMF", TINY, config_dict=cfg(tmp_path / "shared")) for _ in range(2)]
    assert Path(two[0]["checkpoint"]).parent != Path(two[1]["checkpoint"]).parent  # runs never mix


def test_a_model_holding_nan_is_neither_loaded_nor_written(tmp_path):
    first = run_unlearn("ENMF", TINY, config_dict=cfg(tmp_path))
    ckpt = read_checkpoint(first["rows"]["Original"]["checkpoint"])
    state = dict(ckpt.state_dict, **{"user_embedding.weight": torch.full_like(ckpt.state_dict["user_embedding.weight"], float("nan"))})
    bad = tmp_path / "nan.pth"
    torch.save({"state_dict": state, "meta_json": json.dumps(ckpt.meta)}, bad)
    with pytest.raises(UnlearnInputError, match="NaN or Inf"):
        run_unlearn("ENMF", TINY, config_dict=cfg(tmp_path / "n", checkpoint=str(bad), forget="file",
                                                   forget_missing="drop",
                                                   forget_file=request_file(tmp_path / "e.forget", [("u1", "nope")])))
    assert not (tmp_path / "n").exists()
    with pytest.raises(UnlearnInputError, match="NaN or Inf"):
        save_checkpoint(tmp_path / "x.pth", state, {})
    assert not (tmp_path / "x.pth").exists()


def test_ledger_forgets_by_digest(tmp_path):
    exp = prepare(Config("ENMF", TINY, config_dict=cfg(tmp_path)), saved=False)
    ledger = Ledger()
    entry = ledger.record(exp.train, exp.request, "r1")
    assert entry["interactions"] == len(exp.request) and len(entry["pair_hashes"]) == len(exp.request)
    drop = ledger.forgotten_rows(exp.train)
    keys = dataset_keys(exp.train)
    assert set(keys[drop]) == set(pair_keys(exp.request.users, exp.request.items, exp.train.item_num))
    other = Ledger(entries=ledger.entries)  # another salt: the digests match nothing
    assert not other.forgotten_rows(exp.train).any()
