"""A run on CUDA gives the CPU run's result (marked ``gpu``; skipped where CUDA is missing).

One original is trained on the CPU and saved; the same request is then applied to it on each
device, from the checkpoint, through the command-line path (checkpoint loading onto the
configured device, the method, saving).  Methods whose randomness is drawn on the CPU
(AltEraser's block negatives, IFRU's triples) must agree within float tolerance.
"""
from __future__ import annotations

import pytest
import torch

from recbole_unlearn.checkpoint import read_checkpoint
from recbole_unlearn.session import run_unlearn
from test_requests import TINY, cfg

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("model, unlearner", [("ENMF", "AltEraser"), ("LightGCN", "AltEraser"),
                                              ("LightGCN", "IFRU"), ("BPR", "IFRU")])
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
