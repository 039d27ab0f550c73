"""The benchmark suite (benchmarks/) and its membership-inference metric (evaluator/mia.py)."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from conftest import tiny_config_dict, tiny_experiment
from recbole_unlearn.data.forget import ForgetRequest
from recbole_unlearn.data.remaining import dataset_keys, pair_keys
from recbole_unlearn.evaluator.mia import (
    attack_scores, membership_attack_auc, request_membership_pairs, sample_membership_pairs,
)
from recbole_unlearn.quick_start import run_unlearner
from recbole_unlearn.report import evaluate_row, make_eval_setup
from recbole_unlearn.unlearner.retrain import Retrain


# ---- membership inference ------------------------------------------------------------------------
class ScoreTable(torch.nn.Module):
    """A stand-in model whose scores are a fixed [n_users, n_items] table (user and item 0 are padding)."""

    USER_ID = "user_id"

    def __init__(self, scores: torch.Tensor):
        super().__init__()
        self.scores = scores
        self.n_users = scores.shape[0]

    def full_sort_predict(self, interaction) -> torch.Tensor:
        return self.scores[interaction[self.USER_ID]].reshape(-1)


N_USERS, N_ITEMS, PER_USER = 201, 300, 8


def _members_and_candidates(seed=0):
    """Per user 1..200: PER_USER member items and PER_USER other (candidate) items."""
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(1, N_USERS), 2 * PER_USER)
    items = np.concatenate([rng.choice(np.arange(1, N_ITEMS), size=2 * PER_USER, replace=False)
                            for _ in range(1, N_USERS)])
    first = np.tile(np.r_[np.ones(PER_USER, bool), np.zeros(PER_USER, bool)], N_USERS - 1)
    return users[first], items[first], users[~first], items[~first]


def test_mia_auc_is_one_when_forgotten_pairs_score_as_members():
    mu, mi, cu, ci = _members_and_candidates()
    scores = torch.rand(N_USERS, N_ITEMS, generator=torch.Generator().manual_seed(1))
    scores[torch.as_tensor(mu), torch.as_tensor(mi)] += 10.0  # the model still remembers them
    pairs = sample_membership_pairs(mu, mi, cu, ci, N_USERS, seed=0)
    assert membership_attack_auc(ScoreTable(scores), pairs) == 1.0


def test_mia_auc_is_half_for_a_model_that_never_saw_them():
    mu, mi, cu, ci = _members_and_candidates()
    # popular items and generous users make scores uneven, but nothing marks the members
    g = torch.Generator().manual_seed(2)
    scores = torch.rand(N_USERS, N_ITEMS, generator=g) + 3 * torch.rand(1, N_ITEMS, generator=g)
    scores = scores * (1 + 5 * torch.rand(N_USERS, 1, generator=g))
    auc = membership_attack_auc(ScoreTable(scores), sample_membership_pairs(mu, mi, cu, ci, N_USERS, seed=0))
    assert abs(auc - 0.5) < 0.03, auc


def test_calibration_removes_item_popularity():
    """An item every user likes is no evidence of membership: far on top of the user's own
    ranking, yet an ordinary calibrated score."""
    scores = torch.rand(N_USERS, N_ITEMS, generator=torch.Generator().manual_seed(3))
    scores[:, 5] += 4.0  # item 5 is popular with everyone, trained on by no one
    row = scores[1, 1:]
    assert (row[4] - row.mean()) / row.std() > 5  # user 1's own view: an outlier
    calibrated = attack_scores(ScoreTable(scores), np.array([1]), np.array([5]), np.arange(1, N_USERS))
    assert abs(float(calibrated)) < 1.0


def test_a_user_whose_scores_are_all_equal_ties_and_is_no_reference():
    """A zero row (ENMF's deleted user) ranks nothing: its pairs score 0, not the item prior
    −m_i/σ_i that would rank its members by popularity, and the other users' calibration is
    the one they have without it."""
    mu, mi, cu, ci = _members_and_candidates()
    g = torch.Generator().manual_seed(4)
    scores = torch.rand(N_USERS, N_ITEMS, generator=g) + 3 * torch.rand(1, N_ITEMS, generator=g)
    popular = torch.argsort(scores[:, 1:].mean(0), descending=True)[:PER_USER] + 1  # the best-liked items
    mi = mi.copy()
    mi[mu == 1] = popular.numpy()  # user 1's members are popular items, its non-members not
    flat = scores.clone()
    flat[1] = 0.0
    pairs = sample_membership_pairs(mu, mi, cu, ci, N_USERS, seed=0)
    own = pairs.member_users == 1
    calibrated = attack_scores(ScoreTable(flat), pairs.member_users[own], pairs.member_items[own], pairs.reference_users)
    assert torch.equal(calibrated, torch.zeros(int(own.sum()), dtype=torch.float64))
    others = np.setdiff1d(pairs.reference_users, [1])
    rest = pairs.nonmember_users != 1
    users, items = pairs.nonmember_users[rest], pairs.nonmember_items[rest]
    with_flat = attack_scores(ScoreTable(flat), users, items, pairs.reference_users)
    assert torch.allclose(with_flat, attack_scores(ScoreTable(flat), users, items, others))


def test_sampling_balances_each_user_and_is_reproducible():
    users = np.array([1, 1, 1, 1, 2, 2, 3])
    items = np.arange(7)
    cand_u, cand_i = np.array([1, 1, 2, 2, 2, 2]), np.arange(100, 106)
    a = sample_membership_pairs(users, items, cand_u, cand_i, n_users=10, seed=3, n_reference=4)
    b = sample_membership_pairs(users, items, cand_u, cand_i, n_users=10, seed=3, n_reference=4)
    assert np.array_equal(a.member_items, b.member_items) and np.array_equal(a.nonmember_items, b.nonmember_items)
    assert np.array_equal(a.reference_users, b.reference_users) and len(a.reference_users) == 4
    assert 0 not in a.reference_users  # padding is never a reference user
    # user 1: min(4, 2) = 2 of each; user 2: min(2, 4) = 2; user 3 has no candidate: left out
    for u, k in ((1, 2), (2, 2), (3, 0)):
        assert (a.member_users == u).sum() == k == (a.nonmember_users == u).sum()
    assert set(a.nonmember_items) <= set(cand_i) and set(a.member_items) <= set(items)


@pytest.mark.parametrize("forget", ["private", "noise"])
def test_nonmembers_are_never_trained_pairs_of_the_same_users(forget):
    exp = tiny_experiment("ENMF", forget=forget)
    pairs = request_membership_pairs(exp.request, exp.remaining, [exp.valid, exp.test], seed=0)
    n = exp.train.item_num
    trained = dataset_keys(exp.train)  # D_a
    heldout = np.concatenate([dataset_keys(exp.valid), dataset_keys(exp.test)])
    non = pair_keys(pairs.nonmember_users, pairs.nonmember_items, n)
    assert len(pairs) > 0 and len(non) == len(pairs)
    assert not np.isin(non, trained).any()
    assert np.isin(pair_keys(pairs.member_users, pairs.member_items, n),
                   pair_keys(exp.request.users, exp.request.items, n)).all()
    assert set(pairs.nonmember_users) <= set(exp.request.forget_users)
    if forget == "private":  # held-out positives of the forgetting users
        assert np.isin(non, heldout).all()
    else:  # injected false positives: compared with items the user never interacted with
        assert not np.isin(non, heldout).any()


def test_original_leaks_the_forgotten_pairs_and_retrain_does_not():
    exp = tiny_experiment("ENMF", forget="private")
    setup = make_eval_setup(exp.config, exp.remaining, exp.valid, exp.test_r, exp.request)
    original = evaluate_row(exp.original, setup)["mia_auc"]
    retrain = evaluate_row(run_unlearner(exp, Retrain).model, setup)["mia_auc"]
    assert original > 0.75 and abs(retrain - 0.5) < 0.15 and original - retrain > 0.2, (original, retrain)


# ---- the benchmark runner ------------------------------------------------------------------------
from benchmarks import common, run as bench_run, sequential, tables  # noqa: E402


def _opts(tmp_path, **kw) -> dict:
    return dict(bench_run.DEFAULTS, dataset="tiny", out=str(tmp_path / "out"), cache=str(tmp_path / "cache"),
                report=str(tmp_path / "BENCHMARKS.md"), **kw)


def _overrides() -> dict:
    cfg = tiny_config_dict("ENMF", epochs=10, warm_epochs=5, forget_users=8)
    cfg.pop("seed")
    return cfg


def _tables_dir(tmp_path):
    (d,) = (tmp_path / "out" / "tables").iterdir()
    return d


def test_mean_and_std_over_seeds_are_the_sample_statistics():
    per_seed = [{"time_s": 2.0, "test": {"recall@20": 0.1}}, {"time_s": 4.0, "test": {"recall@20": 0.4}},
                {"time_s": 9.0, "test": {"recall@20": 0.7}, "mia_auc": 0.6}]
    agg = common.aggregate(per_seed)
    assert agg["time_s"]["mean"] == pytest.approx(5.0)
    assert agg["time_s"]["std"] == pytest.approx(np.std([2, 4, 9], ddof=1))
    assert agg["test.recall@20"]["std"] == pytest.approx(0.3)
    assert agg["mia_auc"] == {"mean": 0.6, "std": None, "n": 1}  # one seed: no spread
    assert common.fmt(agg["time_s"], 2) == f"5.00 ± {np.std([2, 4, 9], ddof=1):.2f}"
    assert common.fmt(agg["mia_auc"]) == "0.6000" and common.fmt(None) == "–"


def test_tables_runner_writes_every_file_and_the_right_statistics(tmp_path):
    report = bench_run.run(_opts(tmp_path, unlearners="retrain,warmstart", seeds="2"), _overrides(), "cmd-tables")
    d = _tables_dir(tmp_path)
    rows = ["Original", "Retrain", "Retrain-star", "WarmStart"]
    assert {p.name for p in d.glob("s*.json")} == {f"s{s}-{r}.json" for s in (2020, 2021) for r in rows} | {"summary.json"}
    per_seed = {s: {r: json.loads((d / f"s{s}-{r}.json").read_text())["result"] for r in rows} for s in (2020, 2021)}
    summary = json.loads((d / "summary.json").read_text())
    assert summary["seeds"] == [2020, 2021]
    assert list(summary["rows"]) == ["Original", "Retrain", "Retrain*", "WarmStart"]
    for metric in ("test_forget_users.recall@20", "test.ndcg@10", "mia_auc", "repredict_score", "time_s"):
        values = [(per_seed[s]["WarmStart"][metric.split(".")[0]][metric.split(".")[1]] if "." in metric
                   else per_seed[s]["WarmStart"][metric]) for s in (2020, 2021)]
        stat = summary["rows"]["WarmStart"][metric]
        assert stat["mean"] == pytest.approx(np.mean(values)) and stat["std"] == pytest.approx(np.std(values, ddof=1))
    speedups = [per_seed[s]["Retrain"]["time_s"] / per_seed[s]["WarmStart"]["time_s"] for s in (2020, 2021)]
    assert summary["rows"]["WarmStart"]["speedup"]["mean"] == pytest.approx(np.mean(speedups))
    assert all("rbo@10" in per_seed[s][r]["rbo"] and per_seed[s][r]["mia_auc"] is not None
               for s in (2020, 2021) for r in rows)
    text = report.read_text()
    for heading in ("Consistency and completeness", "Accuracy, forgetting users", "Accuracy, all users",
                    "Efficiency", "MIA AUC", "cmd-tables", "cores"):
        assert heading in text
    assert common.fmt({k: summary["rows"]["WarmStart"]["mia_auc"][k] for k in ("mean", "std")}) in text
    assert (tmp_path / "out" / "plots" / f"quality-{d.name}.png").stat().st_size > 1000
    # paired differences: WarmStart − Retrain within each seed, then mean ± std over the seeds
    gaps = [per_seed[s]["WarmStart"]["mia_auc"] - per_seed[s]["Retrain"]["mia_auc"] for s in (2020, 2021)]
    paired = summary["paired"]["WarmStart"]["mia_auc"]
    assert paired["mean"] == pytest.approx(np.mean(gaps)) and paired["std"] == pytest.approx(np.std(gaps, ddof=1))
    assert "Paired differences to Retrain" in text and common.fmt(paired) in text


def test_an_interrupted_run_resumes_without_redoing_finished_runs(tmp_path, monkeypatch):
    opts, overrides = _opts(tmp_path, unlearners="retrain,warmstart", seeds="1"), _overrides()
    real = tables.run_unlearner

    def interrupt_at_warmstart(exp, cls, config=None):
        if cls.__name__ == "WarmStart":
            raise KeyboardInterrupt
        return real(exp, cls, config)

    monkeypatch.setattr(tables, "run_unlearner", interrupt_at_warmstart)
    with pytest.raises(KeyboardInterrupt):
        bench_run.run(opts, overrides)
    d = _tables_dir(tmp_path)
    finished = {p.name: p.stat().st_mtime_ns for p in d.glob("s*.json")}
    assert set(finished) == {"s2020-Original.json", "s2020-Retrain.json", "s2020-Retrain-star.json"}

    calls = []
    monkeypatch.setattr(tables, "run_unlearner", lambda exp, cls, config=None: calls.append(cls.__name__) or real(exp, cls, config))
    monkeypatch.setattr("recbole_unlearn.quick_start.train_original", lambda *a: pytest.fail("Θ_a was retrained"))
    bench_run.run(opts, overrides)
    assert calls == ["WarmStart"]  # neither Θ_a, Retrain nor Retrain* was redone
    assert {p.name: p.stat().st_mtime_ns for p in d.glob("s*.json") if p.name in finished} == finished
    assert (d / "s2020-WarmStart.json").is_file()

    monkeypatch.setattr(tables, "prepare_cached", lambda *a: pytest.fail("a finished seed was prepared again"))
    bench_run.run(opts, overrides)


def test_sequential_requests_chain_each_result_into_the_next(tmp_path, monkeypatch):
    seen = []
    real = sequential.run_unlearner

    def spy(exp, cls, config=None):
        outcome = real(exp, cls, config)
        seen.append((cls.__name__, exp.original, len(exp.train.inter_feat), len(exp.request), outcome.model))
        return outcome

    monkeypatch.setattr(sequential, "run_unlearner", spy)
    opts = _opts(tmp_path, unlearners="warmstart", seeds="1", requests="2", request_users="3", suite="sequential")
    report = bench_run.run(opts, _overrides())
    (d,) = (tmp_path / "out" / "sequential").iterdir()
    chain = json.loads((d / "s2020-WarmStart.json").read_text())["steps"]
    retrain = json.loads((d / "s2020-Retrain.json").read_text())["steps"]
    assert [s["forgotten_users"] for s in chain] == [3, 6] and [s["users"] for s in chain] == [3, 3]
    warm = [s for s in seen if s[0] == "WarmStart"]
    assert warm[1][1] is warm[0][4]  # step 2 starts from step 1's result ...
    assert warm[1][2] == warm[0][2] - warm[0][3]  # ... trained on step 1's remaining data
    assert chain[1]["cum_time_s"] == pytest.approx(chain[0]["time_s"] + chain[1]["time_s"])
    summary = json.loads((d / "summary.json").read_text())
    drift = summary["chains"]["WarmStart"][1]["drift.test_forget_users.recall@20"]["mean"]
    assert drift == pytest.approx(chain[1]["test_forget_users"]["recall@20"] - retrain[1]["test_forget_users"]["recall@20"])
    assert "Sequential requests" in report.read_text() and any((tmp_path / "out" / "plots").glob("sequential-*.png"))

    monkeypatch.setattr(sequential, "run_unlearner", lambda *a: pytest.fail("a finished step was redone"))
    for p in d.glob("s*-WarmStart.json"):
        p.unlink()  # the chain's JSON is lost, its cached steps are not
    bench_run.run(opts, _overrides())
    assert json.loads((d / "s2020-WarmStart.json").read_text())["steps"] == chain


def test_split_request_gives_disjoint_groups_of_whole_users():
    users = np.repeat(np.arange(1, 9), 3)
    request = ForgetRequest("private", users, np.arange(len(users)))
    parts = sequential.split_request(request, 2, 4, seed=0)
    assert [len(p.forget_users) for p in parts] == [4, 4]
    assert not set(parts[0].forget_users) & set(parts[1].forget_users)
    assert sorted(np.concatenate([p.items for p in parts])) == list(range(len(users)))
    with pytest.raises(Exception, match="need 9"):
        sequential.split_request(request, 3, 3, seed=0)


def test_scaling_times_every_request_size(tmp_path):
    opts = _opts(tmp_path, unlearners="warmstart", seeds="1", request_sizes="1,4", suite="scaling")
    report = bench_run.run(opts, _overrides())
    (d,) = (tmp_path / "out" / "scaling").iterdir()
    records = {p.name: json.loads(p.read_text()) for p in d.glob("s2020-*.json")}
    assert set(records) == {"s2020-WarmStart-u0001.json", "s2020-WarmStart-u0004.json"}
    assert [records[f"s2020-WarmStart-u000{k}.json"]["forget"]["users"] for k in (1, 4)] == [1, 4]
    assert all(r["time_s"] > 0 for r in records.values())
    text = report.read_text()
    assert "vs request size" in text and "Not run yet for this model: ml-100k, ml-1m, gowalla-lightgcn" in text
    assert (tmp_path / "out" / "plots" / "scaling-ENMF.png").is_file()


def test_cli_rejects_bad_input_with_exit_code_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["run.py"])
    base = [f"--out={tmp_path / 'out'}", f"--report={tmp_path / 'B.md'}"]
    assert bench_run.main(base + ["--unlearners=no-such-method"]) == 2
    assert bench_run.main(base + ["--unlearner=warmstart"]) == 2
    assert bench_run.main(base + ["--suite=everything"]) == 2
    assert "error:" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_refusing_unlearner_is_reported_and_retried(tmp_path, monkeypatch):
    from recbole_unlearn.errors import UnlearnInputError

    real = tables.run_unlearner

    def refuse_warmstart(exp, cls, config=None):
        if cls.__name__ == "WarmStart":
            raise UnlearnInputError("WarmStart does not support this model")
        return real(exp, cls, config)

    monkeypatch.setattr(tables, "run_unlearner", refuse_warmstart)
    opts = _opts(tmp_path, unlearners="retrain,warmstart", seeds="1")
    report = bench_run.run(opts, _overrides())
    summary = tables.summarize(_tables_dir(tmp_path))
    assert "WarmStart" not in summary["rows"] and "Retrain*" in summary["rows"]
    assert summary["errors"] == {"WarmStart": "WarmStart does not support this model"}
    assert "Not run: **WarmStart** (WarmStart does not support this model)" in report.read_text()

    monkeypatch.setattr(tables, "run_unlearner", real)
    bench_run.run(opts, _overrides())  # the refused run is tried again, the others are kept
    summary = tables.summarize(_tables_dir(tmp_path))
    assert "WarmStart" in summary["rows"] and not summary["errors"]


def test_unlearner_variants_are_parsed_with_typed_keys():
    from benchmarks.common import parse_unlearners
    from recbole_unlearn.errors import UnlearnInputError

    rows = parse_unlearners("retrain, alteraser[alt_optimizer=adamw],ifru[ifru_pruning=false;ifru_k_hop=2]")
    assert [v.name for v in rows] == ["Retrain", "AltEraser[alt_optimizer=adamw]",
                                      "IFRU[ifru_pruning=false;ifru_k_hop=2]"]
    assert dict(rows[2].keys) == {"ifru_pruning": False, "ifru_k_hop": 2}
    with pytest.raises(UnlearnInputError, match="IFRU has no key 'pruning'.*ifru_pruning"):
        parse_unlearners("ifru[pruning=false]")
    with pytest.raises(UnlearnInputError, match="registered unlearners"):
        parse_unlearners("retrain,nosuch[a=1]")
    with pytest.raises(UnlearnInputError, match="cannot read unlearner"):
        parse_unlearners("warmstart[warm_epochs=1")


def test_a_variant_row_runs_with_its_keys(tmp_path):
    opts = _opts(tmp_path, unlearners="warmstart,warmstart[warm_epochs=1]", seeds="1")
    bench_run.run(opts, _overrides())
    records = {p.name: json.loads(p.read_text()) for p in _tables_dir(tmp_path).glob("s*.json")}
    plain, variant = records["s2020-WarmStart.json"], records["s2020-WarmStart[warm_epochs=1].json"]
    assert variant["params"]["warm_epochs"] == 1 and plain["params"]["warm_epochs"] != 1
    assert variant["result"]["epochs"] == 1 < plain["result"]["epochs"]
    assert list(tables.summarize(_tables_dir(tmp_path))["rows"])[-2:] == ["WarmStart", "WarmStart[warm_epochs=1]"]


def test_retrain_star_runs_of_the_old_definition_are_stale(tmp_path):
    from benchmarks.tables import stale
    from recbole_unlearn.checkpoint import write_json

    old, new, other = tmp_path / "old.json", tmp_path / "new.json", tmp_path / "other.json"
    write_json(old, {"row": "Retrain*", "params": {"retrain_seed": None}, "result": {}})
    write_json(new, {"row": "Retrain*", "params": {"retrain_seed": 2020, "retrain_train_seed": 2021}, "result": {}})
    write_json(other, {"row": "WarmStart", "params": {"warm_epochs": 50}, "result": {}})
    assert stale(old) and not stale(new) and not stale(other) and not stale(tmp_path / "missing.json")


def test_first_request_speedup_counts_a_reused_preparation():
    from benchmarks.tables import _prepare_time

    assert _prepare_time({"time_s": 1.0}) == 0.0
    assert _prepare_time({"pretrain_time_s": 2.0}) == 2.0
    assert _prepare_time({"encoder_pretrain_time_s": 5.0}) == 5.0  # an encoder reused from the cache
    assert _prepare_time({"shards_reused": True, "pretrain_time_s": 0.1, "shards_build_time_s": 30.0}) == 30.0
    assert _prepare_time({"prepare_time_s": 0.0, "pretrain_time_s": 9.0}) == 0.0  # carried along a chain


def test_shards_suite_runs_the_tables_at_every_request_size(tmp_path):
    opts = _opts(tmp_path, unlearners="warmstart", seeds="1", request_sizes="1,3", suite="shards")
    bench_run.run(opts, _overrides())
    dirs = sorted((tmp_path / "out" / "tables").iterdir())
    users = sorted(json.loads((d / "s2020-Original.json").read_text())["forget"]["users"] for d in dirs)
    assert users == [1, 3]
    assert all({p.name for p in d.glob("s2020-*.json")} >= {"s2020-Retrain.json", "s2020-WarmStart.json"} for d in dirs)


def test_recsys22_experiments_stand_beside_the_papers_figures():
    from benchmarks import paper

    exp = {"dataset": "ml-1m", "overrides": {"config_files": "properties/protocol/recsys22.yaml"}}
    assert paper.is_protocol(exp) and not paper.is_protocol({"overrides": {}})
    stat = {"mean": 0.25, "std": 0.01, "n": 5}
    summary = {"seeds": [1, 2, 3, 4, 5], "rows": {"AltEraser": {"repredict_score": stat}}}
    text = "\n".join(paper.section(exp, summary))
    assert "0.2500 ± 0.0100 / 0.1390" in text  # ours / Table 3's AltEraser [AH-Newton] on MovieLens-1m
    assert "Table 5" in text and "How our protocol still differs" in text


def test_latency_suite_times_single_user_requests_in_one_session(tmp_path):
    opts = _opts(tmp_path, unlearners="alteraser", seeds="1", requests="3", suite="latency")
    report = bench_run.run(opts, _overrides())
    (d,) = (tmp_path / "out" / "latency").iterdir()
    record = json.loads((d / "s2020-AltEraser.json").read_text())
    assert len(record["wall_s"]) == 3 and all(w >= m > 0 for w, m in zip(record["wall_s"], record["method_s"]))
    assert record["latency"]["max"] == pytest.approx(max(record["wall_s"]))
    assert record["forgotten"] > 0 and set(record["quality"]) == {"Retrain", "AltEraser"}
    assert 0.0 <= record["quality"]["AltEraser"]["mia_auc"] <= 1.0
    assert "Latency: tiny" in report.read_text()


def test_the_device_key_is_checked_and_a_cuda_run_is_its_own_experiment():
    from recbole_unlearn.errors import UnlearnInputError
    from benchmarks.common import Bench
    from benchmarks.run import parse

    with pytest.raises(UnlearnInputError, match="device must be cpu or cuda"):
        parse(["--device=tpu"])
    if not torch.cuda.is_available():
        with pytest.raises(UnlearnInputError, match="no CUDA device"):
            parse(["--device=cuda"])
    cpu, cuda = Bench("tables", "ml-100k", "ENMF", "private"), Bench("tables", "ml-100k", "ENMF", "private", device="cuda")
    assert cpu.key == "ml-100k-ENMF-private" and cuda.key == "ml-100k-ENMF-private-cuda"
    assert cpu.config("Retrain", 2020)["use_gpu"] is False and cuda.config("Retrain", 2020)["use_gpu"] is True


def test_memory_suite_runs_each_row_in_its_own_process_beside_a_retrain(tmp_path):
    report = bench_run.run(_opts(tmp_path, unlearners="alteraser", seeds="1", request_users="4", suite="memory",
                                 repeats="2"), _overrides())
    (d,) = (tmp_path / "out" / "memory").iterdir()
    rows = {r: json.loads((d / f"s2020-{r}.json").read_text()) for r in ("Original", "Retrain", "AltEraser")}
    alt = rows["AltEraser"]
    assert alt["forget"]["users"] == 4 and alt["time_s"] > 0 and rows["Retrain"]["time_s"] > 0
    assert len(alt["times"]) == 2 and alt["times"][0] == alt["time_s"] and len(rows["Retrain"]["times"]) == 1
    assert alt["peak_rss_mb"] >= alt["loaded_rss_mb"] > 0 and rows["Original"]["peak_rss_mb"] > 0
    # the persistent state is AltEraser's item-block cache: n_items × (d² + 2d) floats
    n_items, d = alt["train"]["items"] + 1, tiny_config_dict("ENMF")["embedding_size"]
    assert sum(alt["state_bytes"].values()) == n_items * (d * d + 2 * d) * 4
    assert "Memory and the cost of one request" in report.read_text() and "(2) |" in report.read_text()


def test_group_suite_compares_two_processes_with_one(tmp_path):
    report = bench_run.run(_opts(tmp_path, unlearners="sisa[n_shards=2;shard_reuse=false]", seeds="1", suite="group",
                                 nprocs="2"), _overrides())
    (d,) = (tmp_path / "out" / "group").iterdir()
    one, two = (json.loads((d / f"s2020-SISA[n_shards=2;shard_reuse=false]-n{n}.json").read_text()) for n in (1, 2))
    assert one["equal_to_1"] is True and two["equal_to_1"] is True  # shards: tensor for tensor
    assert len(two["ranks"]) == 2 and all(r["peak_rss_mb"] > 0 for r in two["ranks"])
    assert two["info"]["shards_retrained"] == one["info"]["shards_retrained"] > 0
    assert "Process groups" in report.read_text()


def test_validate_keys_reads_its_grid_and_arguments():
    """``validate_keys.py``: a grid is the product of its axes; a script's own keys are split
    from the Config's; malformed input is one input error."""
    from benchmarks.common import script_keys
    from benchmarks.validate_keys import parse_grid
    from recbole_unlearn.errors import UnlearnInputError

    assert parse_grid("a=1,2 b=x") == [{"a": "1", "b": "x"}, {"a": "2", "b": "x"}]
    assert parse_grid("") == [{}]
    for bad in ("a", "=1", "a="):
        with pytest.raises(UnlearnInputError, match="grid entries"):
            parse_grid(bad)
    keys, overrides = script_keys(["--seed=7", "--epochs=3"], {"seed": "2021"})
    assert keys == {"seed": "7"} and overrides == {"epochs": "3"}
    with pytest.raises(UnlearnInputError, match="--key=value"):
        script_keys(["seed"], {"seed": "2021"})


def test_validate_keys_shortfalls_are_misses_in_units_of_each_tolerance():
    """0 where a target is met; else how far it misses over its tolerance: 85% of the MIA gap
    is half of the 10-point margin, re-predict off by 30% one 15% tolerance over, Recall off
    by 6% one 3% tolerance over, a 50× speed-up half the 100×."""
    from benchmarks.validate_keys import shortfalls

    assert shortfalls(0.95, -0.10, 0.02, 300.0) == (0.0, 0.0, 0.0, 0.0)
    assert shortfalls(0.85, 0.30, -0.06, 50.0) == pytest.approx((0.5, 1.0, 1.0, 1.0))
    assert shortfalls(0.90, 0.15, 0.03, 100.0) == pytest.approx((0.0, 0.0, 0.0, 0.0), abs=1e-12)


def test_validate_keys_scores_rbo_and_the_forgetting_users_against_a_retrain_star():
    """With a Retrain*: Recall within the wider of 3% and Retrain*'s distance (a 5% band makes
    a 10% miss one unit), the forgetting users' Recall within theirs, and RBO@10 short of
    Retrain*'s in units of Retrain*'s own distance from Retrain (0.6 against 0.8 is one unit)."""
    from benchmarks.validate_keys import bands, shortfalls

    gold = {"Recall@20": 0.20, "F-Recall@20": 0.10}
    assert bands(gold, None) == (0.03, 0.03)
    assert bands(gold, {"Recall@20": 0.21, "F-Recall@20": 0.099}) == pytest.approx((0.05, 0.03))
    assert shortfalls(0.95, 0.0, -0.10, 300.0, 0.05, 0.02, 0.03, 0.6, 0.8) == pytest.approx((0, 0, 1.0, 0, 0, 1.0))
    assert shortfalls(0.95, 0.0, 0.0, 300.0, 0.03, -0.09, 0.03, 0.85, 0.8) == pytest.approx((0, 0, 0, 0, 2.0, 0))


def test_validate_keys_bands_are_never_narrower_than_one_hit():
    """One hit of one user moves a Recall averaged over n users by 1 / (n·|V_u|); its mean over
    the users sets the least band: users 1, 2, 3 with 2, 1 and 3 items give (1/2 + 1 + 1/3) / 3 / 3,
    users 1 and 2 alone (1/2 + 1) / 2 / 2; a band set by Retrain* or 3% stays when wider."""
    from types import SimpleNamespace

    from benchmarks.validate_keys import bands, one_hit

    split = SimpleNamespace(uid_field="user_id", inter_feat={"user_id": torch.tensor([1, 1, 2, 3, 3, 3])})
    assert one_hit(split) == pytest.approx((1 / 2 + 1 + 1 / 3) / 3 / 3)
    assert one_hit(split, torch.tensor([1, 2])) == pytest.approx((1 / 2 + 1) / 2 / 2)
    assert one_hit(split, torch.tensor([7])) == 0.0
    gold = {"Recall@20": 0.20, "F-Recall@20": 0.10}
    assert bands(gold, None, (0.002, 0.008)) == pytest.approx((0.03, 0.08))
    assert bands(gold, {"Recall@20": 0.21, "F-Recall@20": 0.12}, (0.002, 0.008)) == pytest.approx((0.05, 0.2))


def test_validate_keys_flags_a_retrain_that_stopped_within_twice_its_patience():
    """A Retrain whose early stopping came before 2 × stopping_step epochs (its best score in
    the first stopping_step) is flagged in the case's header; one that trained longer, or a
    cached one without an epoch count, is not."""
    from benchmarks.validate_keys import stopped_early

    assert "13 epochs" in stopped_early(13, 10) and "under-trained" in stopped_early(13, 10)
    assert stopped_early(20, 10) == stopped_early(120, 10) == stopped_early(None, 10) == ""


def test_validate_keys_refuses_a_bad_seed_list_before_any_training(monkeypatch, capsys):
    """``--seed=2021,2023`` is a list of validation requests; anything else but whole numbers
    is one ``error:`` line and exit 2, before a model is trained."""
    from benchmarks import validate_keys

    threads = torch.get_num_threads()
    monkeypatch.setattr(sys, "argv", ["validate_keys.py"])
    monkeypatch.setattr(validate_keys, "run_case", lambda *a: pytest.fail("trained before checking --seed"))
    try:
        assert validate_keys.main(["--seed=2021,x", "--grid=reset_steps=5"]) == 2
    finally:
        torch.set_num_threads(threads)
    assert capsys.readouterr().err.strip() == "error: seed must be whole numbers separated by commas, not '2021,x'"
    try:
        assert validate_keys.main(["--star=maybe", "--grid=reset_steps=5"]) == 2
    finally:
        torch.set_num_threads(threads)
    assert capsys.readouterr().err.strip() == "error: star must be true or false, not 'maybe'"


def test_a_later_command_adds_its_rows_to_the_experiments_unlearners(tmp_path):
    """``experiment.json`` keeps every command and the union of their rows, in first-seen order."""
    from benchmarks.common import Bench

    bench = Bench("tables", "ml-100k", "LightGCN", "private", out=tmp_path)
    bench.result_dir.mkdir(parents=True)
    bench.write_experiment("run a", unlearners=["RowReset", "DeltaReplay"])
    bench.write_experiment("run b", unlearners=["ItemNewton", "RowReset"])
    info = json.loads((bench.result_dir / "experiment.json").read_text())
    assert info["unlearners"] == ["RowReset", "DeltaReplay", "ItemNewton"]
    assert [c["command"] for c in info["commands"]] == ["run a", "run b"]


def test_targets_scores_a_stored_row_against_its_runs_yardsticks(tmp_path):
    """``targets.py``: a stored tables row's misses, from its request's Original, Retrain and
    Retrain* JSON, match the hand-computed shortfalls (MIA gap, re-predict, Recall band from
    Retrain*'s distance, speed-up, RBO against Retrain*'s); a folder without the row gives none."""
    from benchmarks.targets import score

    def write(name, mia, rep, rec, f_rec, rbo=None, time_s=None):
        result = {"mia_auc": mia, "repredict_score": rep, "test": {"recall@20": rec},
                  "test_forget_users": {"recall@20": f_rec}, "time_s": time_s}
        if rbo is not None:
            result["rbo"] = {"rbo@10": rbo}
        (tmp_path / f"s2020-{name}.json").write_text(json.dumps({"result": result}))

    write("Original", 0.80, 1.0, 0.30, 0.20)
    write("Retrain", 0.50, 0.8, 0.30, 0.20, rbo=1.0, time_s=10.0)
    write("Retrain-star", 0.50, 0.8, 0.33, 0.20, rbo=0.8, time_s=10.0)  # Recall band 10%, F-band 3%
    write("Mine", 0.56, 0.6, 0.36, 0.21, rbo=0.7, time_s=0.2)
    s = score(tmp_path, "2020", "Mine")
    assert s["removed"] == pytest.approx(0.8)
    expected = (1.0,            # (0.9 − 0.8) / 0.1
                2 / 3,          # |0.6 / 0.8 − 1| = 25%, over 15%, minus 1
                1.0,            # +20% against a 10% band
                1.0,            # 100 / 50× − 1
                2 / 3,          # +5% against a 3% band
                0.5)            # (0.8 − 0.7) / (1 − 0.8)
    assert s["short"] == pytest.approx(expected)
    assert score(tmp_path, "2020", "Absent") is None
