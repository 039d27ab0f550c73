"""A long-lived session (recbole_unlearn.session.UnlearnSession): the same chain of requests
through one session and through one command-line run per request gives the same models,
ledgers and audit trail."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from recbole_unlearn.checkpoint import read_checkpoint
from recbole_unlearn.errors import UnlearnInputError
from recbole_unlearn.outputs import verify_audit
from recbole_unlearn.session import UnlearnSession
from test_requests import TINY, cfg, chain, request_file, train_tokens


@pytest.mark.parametrize("unlearner", ["AltEraser", "SISA"])
def test_a_chain_through_a_session_equals_the_chain_through_the_command_line(tmp_path, unlearner):
    pairs = train_tokens(tmp_path)[::5]
    files = [request_file(tmp_path / f"s{k}.forget", pairs[4 * k: 4 * k + 4]) for k in range(3)]
    # one trained original both chains start from (so both ledgers have its salt)
    original = chain(tmp_path / "start", files[:1], unlearner="WarmStart")[0]["rows"]["Original"]["checkpoint"]
    by_cli = run_chain_from(tmp_path / "cli", original, files, unlearner)

    session = UnlearnSession.open("ENMF", TINY, config_dict=cfg(tmp_path / "session", checkpoint=original,
                                                                unlearner=unlearner))
    by_session = [session.forget(forget_file=f, forget="file") for f in files]
    ours, theirs = read_checkpoint(by_session[-1]["checkpoint"]), read_checkpoint(by_cli[-1]["checkpoint"])
    assert ours.state_dict.keys() == theirs.state_dict.keys()
    assert all(torch.equal(ours.state_dict[k], theirs.state_dict[k]) for k in ours.state_dict)
    strip = lambda entries: [{k: v for k, v in e.items() if k not in ("request_id", "time")} for e in entries]  # noqa: E731
    assert strip(ours.meta["ledger"]["entries"]) == strip(theirs.meta["ledger"]["entries"])
    assert len(ours.meta["ledger"]["entries"]) == len(files)
    for ours_row, theirs_row in zip(by_session, by_cli):
        for metric in ("repredict_score", "mia_auc"):
            assert ours_row["rows"][unlearner][metric] == pytest.approx(theirs_row["rows"][unlearner][metric])
    # each request was published and audited as a run is; the chain of checkpoints verifies
    audit = Path(cfg(tmp_path / "session")["checkpoint_dir"]) / "audit.jsonl"
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert len(records) == len(files)
    assert records[1]["input_checkpoint"]["path"] == records[0]["output_checkpoint"]["path"]
    assert verify_audit(str(audit))[0]


def run_chain_from(tmp: Path, start: str, files: list[str], unlearner: str) -> list[dict]:
    from recbole_unlearn.session import run_unlearn

    results, checkpoint = [], start
    for f in files:
        results.append(run_unlearn("ENMF", TINY, config_dict=cfg(tmp, checkpoint=checkpoint, forget="file",
                                                                  forget_file=f, unlearner=unlearner)))
        checkpoint = results[-1]["checkpoint"]
    return results


def test_a_session_keeps_its_state_in_memory_and_saves_it_on_request(tmp_path):
    pairs = train_tokens(tmp_path)[::5]
    files = [request_file(tmp_path / f"m{k}.forget", pairs[4 * k: 4 * k + 4]) for k in range(2)]
    session = UnlearnSession.open("ENMF", TINY, config_dict=cfg(tmp_path, unlearner="AltEraser"), saved=False)
    for f in files:
        session.forget(forget_file=f)
    written = [f for f in (tmp_path / "ck").rglob("*") if f.is_file()] if (tmp_path / "ck").exists() else []
    assert session.requests == 2 and written == []  # nothing written
    assert session.chain.method_state[0] == "AltEraser"  # the item cache travels in memory
    path = session.save(tmp_path / "now.pth")
    saved = read_checkpoint(path)
    assert len(saved.meta["ledger"]["entries"]) == 2
    assert all(torch.equal(saved.state_dict[k], v) for k, v in session.chain.original.state_dict().items())
    with pytest.raises(UnlearnInputError, match="exists"):
        session.save(path)  # never over an existing file unless asked
    assert session.save(path, overwrite=True) == path


def test_requests_without_evaluation_publish_their_checkpoints_and_chain(tmp_path):
    """``evaluate: False`` (a platform's request: no metrics) still publishes every output and
    the next request starts from the published checkpoint."""
    pairs = train_tokens(tmp_path)[::5]
    files = [request_file(tmp_path / f"e{k}.forget", pairs[4 * k: 4 * k + 4]) for k in range(2)]
    session = UnlearnSession.open("ENMF", TINY, config_dict=cfg(tmp_path, unlearner="AltEraser", evaluate=False))
    results = [session.forget(forget_file=f) for f in files]
    for result in results:
        assert Path(result["checkpoint"]).is_file()
        assert "mia_auc" not in result["rows"]["AltEraser"]  # no metrics were computed
    last = read_checkpoint(results[-1]["checkpoint"])
    assert len(last.meta["ledger"]["entries"]) == 2
    assert Path(results[0]["checkpoint"]).parent != Path(results[1]["checkpoint"]).parent  # one run folder each
    assert (Path(results[1]["checkpoint"]).parent / "results.json").is_file()


def test_a_request_that_is_not_evaluated_and_trains_nothing_builds_no_loaders(tmp_path, monkeypatch):
    """The D_r loaders are built on first use: AltEraser with ``evaluate: False`` needs none."""
    from recbole_unlearn.data import remaining as remaining_module

    pairs = train_tokens(tmp_path)[::5]
    files = [request_file(tmp_path / f"l{k}.forget", pairs[4 * k: 4 * k + 4]) for k in range(2)]
    session = UnlearnSession.open("ENMF", TINY, config_dict=cfg(tmp_path, unlearner="AltEraser", evaluate=False),
                                  saved=False)
    session.forget(forget_file=files[0])  # trains the original (its validation loader is built)
    built = []
    real = remaining_module.create_samplers
    monkeypatch.setattr(remaining_module, "create_samplers", lambda *a, **k: built.append(1) or real(*a, **k))
    session.forget(forget_file=files[1])
    assert built == [] and session.requests == 2
    session.forget(forget_file=request_file(tmp_path / "w.forget", pairs[40:44]), unlearner="WarmStart")
    assert built == [1]  # a method that trains builds the validation loader when it needs it
