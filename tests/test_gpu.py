"""A run on CUDA gives the CPU run's result (marked ``gpu``; skipped where CUDA is missing).

One original is trained on the CPU and saved; the same request is then applied to it on each
device, from the checkpoint, through the command-line path (checkpoint loading onto the
configured device, the method, saving).  Methods whose randomness is drawn on the CPU
(AltEraser's block negatives, IFRU's triples, RowReset's negatives and initial rows) must agree within float tolerance.
"""
from __future__ import annotations

import pytest
import torch

from recbole_unlearn.checkpoint import read_checkpoint
from recbole_unlearn.session import run_unlearn
from test_requests import TINY, cfg

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("model, unlearner", [("ENMF", "AltEraser"), ("LightGCN", "AltEraser"),
                                              ("LightGCN", "IFRU"), ("BPR", "IFRU"), ("LightGCN", "RowReset")])
def test_a_cuda_run_gives_the_cpu_run_result(tmp_path, model, unlearner):
    keys = dict(model=model, forget="private", embedding_size=16)
    original = run_unlearn(model, TINY, config_dict=cfg(tmp_path / "train", unlearner="WarmStart", warm_epochs=1,
                                                        **keys))["rows"]["Original"]["checkpoint"]
    results = {}
    for device, use_gpu in (("cpu", False), ("cuda", True)):
        out = run_unlearn(model, TINY, config_dict=cfg(tmp_path / device, checkpoint=original, unlearner=unlearner,
                                                       use_gpu=use_gpu, **keys))
        results[device] = out
    ours, theirs = (read_checkpoint(results[d]["checkpoint"]).state_dict for d in ("cuda", "cpu"))
    assert ours.keys() == theirs.keys()
    for k in theirs:
        torch.testing.assert_close(ours[k].cpu(), theirs[k], rtol=1e-4, atol=1e-5, msg=k)
    for metric in ("repredict_score", "mia_auc"):
        assert results["cuda"]["rows"][unlearner][metric] == pytest.approx(results["cpu"]["rows"][unlearner][metric],
                                                                            abs=1e-4)


def test_use_gpu_false_keeps_a_run_on_the_cpu():
    from conftest import make_config

    assert make_config("ENMF", use_gpu=False)["device"].type == "cpu"
    assert make_config("ENMF", use_gpu=True)["device"].type == "cuda"


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="an nccl group needs a CUDA device per process")
def test_an_nccl_group_gives_the_single_process_cuda_result(tmp_path):
    """Two nccl processes, one GPU each, against one process on one GPU (the gloo test's rows)."""
    from recbole_unlearn import distributed, testing
    from test_distributed import close, free_port

    root = str(testing.write_tiny_dataset(tmp_path / "data"))
    distributed.spawn(testing.group_member, 2, (root, str(tmp_path), testing.GROUP_ROWS, "nccl", True), port=free_port())
    single = testing.unlearned_states(root, use_gpu=True)
    for row, (_, unlearner, _) in enumerate(testing.GROUP_ROWS):
        if unlearner == "Retrain":
            continue
        for r in range(2):
            got = torch.load(tmp_path / f"rank{r}.pt", weights_only=False)[row]["model"]
            for k, v in single[row]["model"].items():
                assert close(got[k], v, exact=False), (unlearner, k)
