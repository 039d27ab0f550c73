"""Tests for recbole_unlearn.evaluator (pure metrics and the RecBole RBO adapter)."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from recbole.config import Config
from recbole.evaluator import Collector, DataStruct, Evaluator
from recbole.evaluator import register as reg

from recbole_unlearn.evaluator import (
    mean_rbo,
    membership_auc,
    rbo,
    register_recbole_metrics,
    repredict_score,
    set_rbo_reference,
    topk_recall_ndcg,
)

torch.set_num_threads(1)

LOG2_3 = math.log2(3.0)
LOG2_5 = math.log2(5.0)


# ----------------------------------------------------------------------------- rbo


def test_rbo_identical_is_one():
    assert rbo([5, 3, 9, 1], [5, 3, 9, 1]) == pytest.approx(1.0, abs=1e-12)
    assert rbo([5, 3, 9, 1], [5, 3, 9, 1], p=0.5, k=2) == pytest.approx(1.0, abs=1e-12)


def test_rbo_disjoint_is_zero():
    assert rbo([1, 2, 3], [4, 5, 6]) == 0.0


def test_rbo_worked_example():
    # a = [1, 2, 3], b = [1, 3, 2], p = 0.9, k = 3.
    # Prefix overlaps: X_1 = |{1}&{1}| = 1, X_2 = |{1,2}&{1,3}| = 1, X_3 = 3.
    # Agreements A_d = X_d/d: 1, 1/2, 1.
    # sum_d A_d p^d = 1*0.9 + 0.5*0.81 + 1*0.729 = 0.9 + 0.405 + 0.729 = 2.034
    # (1-p)/p * sum = (0.1/0.9) * 2.034 = 0.226
    # tail (X_k/k) p^k = 1 * 0.729 = 0.729
    # RBO_ext = 0.226 + 0.729 = 0.955
    assert abs(rbo([1, 2, 3], [1, 3, 2], p=0.9, k=3) - 0.955) < 1e-9


def test_rbo_truncation_and_errors():
    # k truncates: the first two ranks agree fully.
    assert rbo([1, 2, 3], [1, 2, 4], k=2) == pytest.approx(1.0)
    # Lists shorter than k use the common length (here 3).
    assert rbo([1, 2, 3], [1, 3, 2, 7], k=10) == pytest.approx(0.955)
    # Tensors are accepted.
    assert rbo(torch.tensor([1, 2, 3]), torch.tensor([1, 3, 2])) == pytest.approx(0.955)
    with pytest.raises(ValueError):
        rbo([], [1, 2])
    with pytest.raises(ValueError):
        rbo([1, 2], [1, 2], p=1.0)
    with pytest.raises(ValueError):
        rbo([1, 1, 2], [1, 2, 3])


def test_mean_rbo_matches_rowwise_rbo():
    gen = torch.Generator().manual_seed(0)
    n, k = 64, 20
    # Draw from a small pool so that the lists overlap partially.
    a = torch.stack([torch.randperm(40, generator=gen)[:k] for _ in range(n)])
    b = torch.stack([torch.randperm(40, generator=gen)[:k] for _ in range(n)])
    b[:5] = a[:5]  # some identical rows
    for p in (0.5, 0.9, 0.98):
        expected = float(np.mean([rbo(a[i].tolist(), b[i].tolist(), p=p) for i in range(n)]))
        assert mean_rbo(a, b, p=p) == pytest.approx(expected, abs=1e-12)
    # Different depths: the common depth is used.
    expected = float(np.mean([rbo(a[i].tolist(), b[i, :7].tolist()) for i in range(n)]))
    assert mean_rbo(a, b[:, :7]) == pytest.approx(expected, abs=1e-12)


def test_mean_rbo_extremes_errors_and_speed():
    a = torch.arange(12).reshape(3, 4)
    assert mean_rbo(a, a) == pytest.approx(1.0, abs=1e-12)
    assert mean_rbo(a, a + 100) == 0.0
    with pytest.raises(ValueError):
        mean_rbo(a, a[:2])
    with pytest.raises(ValueError):
        mean_rbo(torch.tensor([[1, 1, 2]]), torch.tensor([[1, 2, 3]]))

    gen = torch.Generator().manual_seed(1)
    big_a = torch.rand(6000, 400, generator=gen).topk(50, dim=1).indices
    big_b = torch.rand(6000, 400, generator=gen).topk(50, dim=1).indices
    start = time.perf_counter()
    value = mean_rbo(big_a, big_b)
    assert time.perf_counter() - start < 1.0
    assert 0.0 < value < 1.0


# ----------------------------------------------------------------------------- repredict


def test_repredict_score():
    assert repredict_score(torch.tensor([0.2, 0.4, 0.9])) == pytest.approx(0.5)
    assert repredict_score(torch.tensor([1.0])) == 1.0
    assert math.isnan(repredict_score(torch.tensor([])))


# ----------------------------------------------------------------------------- membership AUC


def test_membership_auc_extremes():
    assert membership_auc(torch.tensor([0.8, 0.9]), torch.tensor([0.1, 0.2, 0.3])) == 1.0
    assert membership_auc(torch.tensor([0.1, 0.2]), torch.tensor([0.8, 0.9, 0.95])) == 0.0
    same = torch.full((7,), 0.42)
    assert membership_auc(same, same[:3]) == 0.5
    assert math.isnan(membership_auc(torch.tensor([]), torch.tensor([0.1])))


def test_membership_auc_worked_tie():
    # members [0.9, 0.5], non-members [0.5, 0.1]; the four (member, non-member) pairs:
    # (0.9,0.5) -> 1, (0.9,0.1) -> 1, (0.5,0.5) -> 1/2 (tie), (0.5,0.1) -> 1  => 3.5 / 4 = 0.875
    assert membership_auc([0.9, 0.5], [0.5, 0.1]) == 0.875


def test_membership_auc_matches_pairwise_count():
    rng = np.random.default_rng(3)
    m = rng.integers(0, 10, size=50).astype(float)  # many ties
    n = rng.integers(0, 8, size=40).astype(float)
    diff = m[:, None] - n[None, :]
    expected = ((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size
    assert membership_auc(torch.tensor(m), n) == pytest.approx(expected, abs=1e-12)


# ----------------------------------------------------------------------------- recall / ndcg

# Two users with positives (and a third without, which must be skipped), 6 items.
# user 0: scores -> ranking items 0 (0.9), 2 (0.8), 4 (0.5), 5 (0.3), 1 (0.1), 3 (-inf)
#         positives {2, 5}: hits by rank = [0, 1, 0, 1, 0, 0]
#         recall@1 = 0, recall@2 = 1/2, recall@4 = 2/2 = 1
#         ndcg@1 = 0
#         ndcg@2 = (1/log2 3) / (1 + 1/log2 3) = 1 / (log2 3 + 1)            (IDCG over 2 ranks)
#         ndcg@4 = (1/log2 3 + 1/log2 5) / (1 + 1/log2 3)                    (IDCG over min(2,4))
# user 1: ranking items 5 (0.95), 1 (0.7), 3 (0.6), 4 (0.4), 0 (0.2), 2 (-inf)
#         positives {1}: hits by rank = [0, 1, 0, 0, 0, 0]
#         recall@1 = 0, recall@2 = 1, recall@4 = 1
#         ndcg@1 = 0, ndcg@2 = ndcg@4 = (1/log2 3) / 1                       (IDCG over min(1,k))
# means: recall@1 = 0, recall@2 = 0.75, recall@4 = 1
SCORES = torch.tensor(
    [
        [0.9, 0.1, 0.8, -math.inf, 0.5, 0.3],
        [0.2, 0.7, -math.inf, 0.6, 0.4, 0.95],
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
    ]
)
POSITIVES = [torch.tensor([2, 5]), torch.tensor([1]), torch.tensor([], dtype=torch.long)]
EXPECTED = {
    "recall@1": 0.0,
    "ndcg@1": 0.0,
    "recall@2": 0.75,
    "ndcg@2": (1.0 / (LOG2_3 + 1.0) + 1.0 / LOG2_3) / 2.0,
    "recall@4": 1.0,
    "ndcg@4": ((1.0 / LOG2_3 + 1.0 / LOG2_5) / (1.0 + 1.0 / LOG2_3) + 1.0 / LOG2_3) / 2.0,
}


def test_topk_recall_ndcg_hand_computed():
    out = topk_recall_ndcg(SCORES, POSITIVES, ks=[1, 2, 4])
    assert set(out) == set(EXPECTED)
    for key, value in EXPECTED.items():
        assert out[key] == pytest.approx(value, abs=1e-12), key


def test_topk_recall_ndcg_csr_and_edge_cases():
    indptr = torch.tensor([0, 2, 3, 3])
    indices = torch.tensor([2, 5, 1])
    out = topk_recall_ndcg(SCORES, (indptr, indices), ks=[1, 2, 4])
    for key, value in EXPECTED.items():
        assert out[key] == pytest.approx(value, abs=1e-12), key
    # k above n_items ranks everything: every positive is found.
    assert topk_recall_ndcg(SCORES, POSITIVES, ks=[50])["recall@50"] == 1.0
    none = topk_recall_ndcg(SCORES, [torch.tensor([], dtype=torch.long)] * 3, ks=[2])
    assert math.isnan(none["recall@2"]) and math.isnan(none["ndcg@2"])
    with pytest.raises(ValueError):
        topk_recall_ndcg(SCORES, POSITIVES[:2], ks=[2])


# ----------------------------------------------------------------------------- RecBole adapter


@pytest.fixture(scope="module")
def recbole_config():
    register_recbole_metrics()
    return Config(
        model="Pop",
        dataset="ml-100k",
        config_dict={
            "metrics": ["Recall", "NDCG", "RBO"],
            "topk": [1, 2, 4],
            "metric_decimal_place": 10,
            "device": "cpu",
            "use_gpu": False,
            "valid_metric": "rbo@4",
        },
    )


def test_register_is_idempotent():
    from recbole.evaluator.register import metric_types, metrics_dict, smaller_metrics

    from recbole_unlearn.evaluator.recbole_metrics import RBO

    ids = (id(reg.metrics_dict), id(reg.metric_information), id(reg.metric_types), id(reg.smaller_metrics))
    n_before = None
    for _ in range(2):
        assert register_recbole_metrics() == ["rbo"]
        sizes = (len(reg.metrics_dict), len(reg.metric_information), len(reg.metric_types), len(reg.smaller_metrics))
        assert n_before is None or sizes == n_before
        n_before = sizes
    # Mutated in place: names imported elsewhere see the new metric.
    assert ids == (id(reg.metrics_dict), id(reg.metric_information), id(reg.metric_types), id(reg.smaller_metrics))
    assert metrics_dict["rbo"] is RBO and "rbo" in metric_types and "rbo" not in smaller_metrics
    assert reg.metric_information["rbo"] == ["rec.items"]
    import recbole.config.configurator as configurator

    assert configurator.metric_types is reg.metric_types
    assert configurator.smaller_metrics is reg.smaller_metrics


def test_recbole_evaluator_end_to_end(recbole_config):
    assert recbole_config["valid_metric_bigger"] is True
    # Real Collector path: full-sort scores -> rec.items (top-k ids) and rec.topk (hit flags).
    collector = Collector(recbole_config)
    assert collector.register.need("rec.items") and collector.register.need("rec.topk")
    users = SCORES[:2]
    pos_u = torch.tensor([0, 0, 1])
    pos_i = torch.tensor([2, 5, 1])
    collector.eval_batch_collect(users, None, pos_u, pos_i)
    struct = collector.get_data_struct()
    assert struct["rec.items"].tolist() == [[0, 2, 4, 5], [5, 1, 3, 4]]

    # Reference top-4: user 0 reference [0, 4, 2, 9], user 1 reference [7, 8, 9, 6].
    # rbo@1: user 0 -> 1, user 1 -> 0  => 0.5
    # rbo@2: user 0: X_1 = 1, X_2 = |{0,2}&{0,4}| = 1 -> 1/9*(0.9 + 0.5*0.81) + 0.5*0.81 = 0.55
    #        => mean 0.275
    # rbo@4: user 0: X = 1, 1, 3, 3 -> 1/9*(0.9 + 0.405 + 0.729 + 0.75*0.6561) + 0.75*0.6561
    reference = torch.tensor([[0, 4, 2, 9], [7, 8, 9, 6]])
    set_rbo_reference(reference)
    try:
        result = Evaluator(recbole_config).evaluate(struct)
    finally:
        set_rbo_reference(None)
    rbo4_user0 = (0.9 + 0.405 + 0.729 + 0.75 * 0.6561) / 9.0 + 0.75 * 0.6561
    assert result["rbo@1"] == pytest.approx(0.5, abs=1e-9)
    assert result["rbo@2"] == pytest.approx(0.275, abs=1e-9)
    assert result["rbo@4"] == pytest.approx(rbo4_user0 / 2.0, abs=1e-9)
    assert result["rbo@4"] == pytest.approx(
        mean_rbo(struct["rec.items"], reference), abs=1e-9
    )
    # RecBole's own Recall/NDCG on the same data agree with topk_recall_ndcg.
    ours = topk_recall_ndcg(SCORES[:2], POSITIVES[:2], ks=[1, 2, 4])
    for key, value in ours.items():
        assert result[key] == pytest.approx(value, abs=1e-9), key

    # A hand-built DataStruct works as well.
    manual = DataStruct()
    manual.set("rec.items", torch.tensor([[1, 2, 3, 4]]))
    manual.set("rec.topk", torch.tensor([[1, 0, 0, 0, 1]]))
    set_rbo_reference(torch.tensor([[1, 3, 2, 4]]))
    try:
        out = Evaluator(recbole_config).evaluate(manual)
    finally:
        set_rbo_reference(None)
    assert out["rbo@4"] == pytest.approx(rbo([1, 2, 3, 4], [1, 3, 2, 4]), abs=1e-9)


def test_recbole_rbo_needs_reference(recbole_config):
    struct = DataStruct()
    struct.set("rec.items", torch.tensor([[1, 2, 3, 4]]))
    struct.set("rec.topk", torch.tensor([[1, 0, 0, 0, 1]]))
    set_rbo_reference(None)
    with pytest.raises(RuntimeError):
        Evaluator(recbole_config).evaluate(struct)
    set_rbo_reference(torch.tensor([[1, 2]]))  # shallower than max(topk) = 4
    try:
        with pytest.raises(ValueError):
            Evaluator(recbole_config).evaluate(struct)
    finally:
        set_rbo_reference(None)
