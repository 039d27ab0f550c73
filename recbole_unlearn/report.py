"""Evaluation of one row (Original, Retrain, an unlearner, ...) and the paper-style table.

Every row is evaluated on the same loaders (history = D_r), for all test
users and for the forgetting users only.  A forgetting user with no training pair left in D_r
(a whole-user deletion) stays among them: Retrain learnt nothing of such a user (its row is
the untrained one, or for ENMF shrunk towards 0), so Retrain's accuracy for them is chance.
Every method sets such a user's row to Retrain's (``Unlearner.reset_deleted_users``); a row
that still ranks their test items far higher holds what it learnt of them in other rows.
Consistency with Retrain is measured with RBO (extrapolated RBO of Webber et al. 2010,
persistence ``rbo_p``) of the forgetting users' top-k lists, with the same masking as ranking
evaluation (training and validation items).
Completeness is the AUC of a membership-inference attack on the forgotten pairs
(:mod:`recbole_unlearn.evaluator.mia`: calibrated scores, forgotten vs never-seen pairs).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from recbole.data.interaction import Interaction
from recbole.trainer import Trainer

from recbole_unlearn._compat import prepare_trainer_dir
from recbole_unlearn.data.remaining import pairs, select_rows, users_without_pairs
from recbole_unlearn.evaluator import mean_rbo, repredict_score
from recbole_unlearn.evaluator.mia import MembershipPairs, membership_attack_auc, request_membership_pairs

RBO_KS = (10, 20, 50)


@dataclass
class EvalSetup:
    """What every row is evaluated with (built once per run)."""

    config: object
    test: object  # FullSortEvalDataLoader over all test users (history D_r + valid)
    test_forget: object  # the same restricted to the forgetting users (None if they have no test data)
    forget_users: torch.Tensor  # [n_forget_users]
    forget_pairs: tuple[torch.Tensor, torch.Tensor]  # ([n], [n]) internal ids
    history: torch.Tensor  # [n_forget_users, n_items] bool: items masked in ranking
    mia_pairs: MembershipPairs | None = None  # forgotten vs never-seen pairs of the attack
    groups: dict | None = None  # {"active": loader, "inactive": loader}: the fairness groups' test users
    deleted_users: int = 0  # forgetting users with no pair left in D_r (deleted whole)


def make_eval_setup(config, remaining, valid_ds, test_loader, request) -> EvalSetup:
    """Loaders and masks for evaluating rows after ``request`` (``remaining`` is D_r)."""
    users = torch.as_tensor(request.forget_users, dtype=torch.long)
    deleted = len(users_without_pairs(remaining, users))
    test_ds = test_loader._dataset
    in_request = torch.isin(test_ds.inter_feat[test_ds.uid_field], users)
    test_forget = None
    if bool(in_request.any()):
        sub = select_rows(test_ds, in_request)
        test_forget = type(test_loader)(config, sub, test_loader._sampler, shuffle=False)
    history = torch.zeros(len(users), remaining.item_num, dtype=torch.bool)
    history[:, 0] = True
    row_of = {int(u): r for r, u in enumerate(users)}
    for ds in (remaining, valid_ds):
        u, i = (x.numpy() for x in pairs(ds))
        sel = np.isin(u, users.numpy())
        rows = torch.as_tensor([row_of[int(x)] for x in u[sel]], dtype=torch.long)
        history[rows, torch.as_tensor(i[sel], dtype=torch.long)] = True
    forgotten = (torch.as_tensor(request.users, dtype=torch.long), torch.as_tensor(request.items, dtype=torch.long))
    mia = request_membership_pairs(request, remaining, [valid_ds, test_ds], seed=int(config["seed"]))
    groups = activity_groups(config, remaining, request, test_loader)
    return EvalSetup(config, test_loader, test_forget, users, forgotten, history, mia, groups, deleted_users=deleted)


def activity_groups(config, remaining, request, test_loader) -> dict | None:
    """Test loaders of the active users (the ``fairness_active_share`` with the most training
    interactions in D_a = D_r + the request) and of the inactive rest: CURE4Rec's fairness
    aspect is the accuracy gap between the two groups.  None if a group would be empty."""
    counts = np.bincount(remaining.inter_feat[remaining.uid_field].numpy(), minlength=remaining.user_num)
    counts = counts + np.bincount(np.asarray(request.users, dtype=np.int64), minlength=remaining.user_num)
    test_ds = test_loader._dataset
    test_users = test_ds.inter_feat[test_ds.uid_field].numpy()
    present = np.unique(test_users)
    n_active = int(np.ceil(float(config["fairness_active_share"]) * len(present)))
    if len(present) < 2 or n_active < 1 or n_active >= len(present):
        return None
    order = present[np.argsort(-counts[present], kind="stable")]
    active = np.isin(test_users, order[:n_active])
    return {name: type(test_loader)(config, select_rows(test_ds, mask), test_loader._sampler, shuffle=False)
            for name, mask in (("active", active), ("inactive", ~active))}


@torch.no_grad()
def forget_user_topk(model, setup: EvalSetup, k: int = max(RBO_KS)) -> torch.Tensor:
    """Top-k item ids of each forgetting user, history masked, [n_forget_users, k]."""
    model.eval()
    inter = Interaction({model.USER_ID: setup.forget_users})
    scores = model.full_sort_predict(inter).view(len(setup.forget_users), -1).clone()
    scores[setup.history] = -torch.inf
    return torch.topk(scores, k=min(k, scores.shape[1]), dim=1).indices


@torch.no_grad()
def evaluate_row(model, setup: EvalSetup, reference_topk: torch.Tensor | None = None) -> dict:
    """Accuracy, re-predict score and (with a reference) RBO of one model."""
    model.eval()
    prepare_trainer_dir(setup.config)
    trainer = Trainer(setup.config, model)
    out = {"test": _plain(trainer.evaluate(setup.test, load_best_model=False))}
    if setup.test_forget is not None:
        out["test_forget_users"] = _plain(trainer.evaluate(setup.test_forget, load_best_model=False))
    if setup.groups is not None:
        active, inactive = (_plain(trainer.evaluate(setup.groups[g], load_best_model=False)) for g in ("active", "inactive"))
        out["fairness_gap"] = {k: active[k] - inactive[k] for k in active}  # active − inactive users' accuracy
        out["test_active"], out["test_inactive"] = active, inactive
    if setup.deleted_users:
        out["forget_users_deleted"] = setup.deleted_users
    users, items = setup.forget_pairs
    out["repredict_score"] = repredict_score(model.predict_proba(users, items)) if len(users) else None
    mia = setup.mia_pairs
    out["mia_auc"] = membership_attack_auc(model, mia) if mia is not None and len(mia) else None
    if reference_topk is not None and len(setup.forget_users):
        topk = forget_user_topk(model, setup)
        p = float(setup.config["rbo_p"])
        out["rbo"] = {f"rbo@{k}": mean_rbo(topk[:, :k], reference_topk[:, :k], p=p) for k in RBO_KS}
        out["rbo_p"] = p
    return out


def _plain(result) -> dict:
    return {k: float(v) for k, v in result.items()}


def format_table(results: dict, k: int = 20) -> str:
    """The paper-style table: efficiency, accuracy (forgetting users, all users), consistency."""
    header = (
        f"{'row':<14}{'time_s':>10}{'speedup':>9}{f'F-R@{k}':>9}{f'F-N@{k}':>9}"
        f"{f'R@{k}':>8}{f'N@{k}':>8}{'RBO@10':>8}{'repred':>8}"
    )
    lines = [header, "-" * len(header)]
    for name, row in results["rows"].items():
        t = row.get("time_s", row.get("train_time_s"))
        fu, al = row.get("test_forget_users", {}), row.get("test", {})
        lines.append(
            f"{name:<14}{_fmt(t, 10, 2)}{_fmt(row.get('speedup'), 9, 1)}"
            f"{_fmt(fu.get(f'recall@{k}'), 9)}{_fmt(fu.get(f'ndcg@{k}'), 9)}"
            f"{_fmt(al.get(f'recall@{k}'), 8)}{_fmt(al.get(f'ndcg@{k}'), 8)}"
            f"{_fmt(row.get('rbo', {}).get('rbo@10'), 8)}{_fmt(row.get('repredict_score'), 8)}"
        )
    deleted = max((r.get("forget_users_deleted", 0) for r in results["rows"].values()), default=0)
    if deleted:
        lines.append(f"note: {deleted} forgetting users have no training data left; Retrain learnt nothing of them, "
                     "so its F-R and F-N are chance for them; a row far above it may still hold what it learnt of "
                     "them")
    if results.get("original_converged") is False:
        lines.append("note: the original stopped at the epoch cap while still improving (original_converged: "
                     "false); train it longer before trusting this comparison")
    return "\n".join(lines)


def _fmt(value, width: int, digits: int = 4) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


def speedups(retrain_time: float, time_s: float, prepare_time_s: float | None = None) -> dict:
    """``speedup`` = Retrain's time / the row's, and ``first_request_speedup`` = Retrain's time /
    (the row's time + its preparation): a first request also pays the method's preparation."""
    return {"speedup": retrain_time / time_s, "first_request_speedup": retrain_time / (time_s + (prepare_time_s or 0.0))}
