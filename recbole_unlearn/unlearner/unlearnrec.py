"""UnlearnRec: a pre-trained Influence Encoder answers a request in one pass plus a short fine-tune.

Chen, Xia & Huang, "Pre-training for Recommendation Unlearning", SIGIR 2025
(encoder and losses: :mod:`recbole_unlearn.unlearner._influence_encoder`).

* :meth:`UnlearnRec.pretrain` (once per original model, untimed, reported as
  ``pretrain_time_s``): with Θ_a frozen, the encoder learns on simulated requests — a random
  ``pretrain_drop_rate`` of D_a's edges, a fresh draw every ``request_every`` epochs — to map
  E0 to E0 + Δ so that the backbone on the simulated remaining graph minimises
  L = L_model(remaining) + λ_u·L_unlearn + λ_a·L_align + λ_c·L_contrast.
  The encoder is saved as a safe checkpoint (``encoder_path``) and reused by later requests
  while the data, Θ_a and the pre-training keys match.
* :meth:`UnlearnRec.erase` (per request, timed): one encoder pass writes E0 + Δ into the copy
  of Θ_a (already on the D_r graph), then ``finetune_epochs`` epochs train the model itself on
  D_r with L_model + λ_u·L_unlearn + λ_a·L_align (the contrastive term concerns the encoder only).
  The result is a plain model of the backbone's class.

Everything the method asks of the backbone is the model protocol: ``graph`` (it serves graph
models only, see :meth:`UnlearnRec.refusal`), ``ego_embeddings``, ``outputs``,
``final_embeddings`` (the withdrawal basis: the propagated outputs) and ``training_loss`` with
E0 replaced.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter

import numpy as np
import torch
from recbole.utils import init_seed

from recbole_unlearn.checkpoint import load_checkpoint, save_checkpoint
from recbole_unlearn.data.remaining import select_rows, train_loader
from recbole_unlearn.data.ledger import data_fingerprint
from recbole_unlearn.model.protocol import offers, require
from recbole_unlearn.registry import register_unlearner
from recbole_unlearn.unlearner._influence_encoder import (
    ENCODER_FORMAT, InfluenceEncoder, PairSampler, align_loss, contrast_loss, forget_adjacency, node_degrees,
    unlearn_loss,
)
from recbole_unlearn.unlearner.base import Params, Unlearner, UnlearnTask

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class UnlearnRecParams(Params):
    """Keys of ``properties/unlearner/UnlearnRec.yaml`` (meanings there)."""

    encoder_layers: int = 2
    idm_norm: str = "request"
    pretrain_requests: str = "edges"
    item_share: float = 1.0
    withdrawal_init: float = 1.0
    pretrain_epochs: int = 10
    pretrain_learning_rate: float = 0.001
    pretrain_drop_rate: float = 0.15
    request_every: int = 2
    unlearn_weight: float = 1.0
    unlearn_partner: str = "positive"
    align_weight: float = 1.0
    contrast_weight: float = 0.01
    contrast_temperature: float = 0.2
    contrast_drop_rate: float = 0.1
    aux_batch_size: int = 2048
    finetune_epochs: int = 3
    finetune_learning_rate: float | None = None
    encoder_path: str | None = None


def state_fingerprint(model: torch.nn.Module) -> str:
    """A short hash of a model's parameters: the encoder only fits the Θ_a it was trained on."""
    h = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@register_unlearner
class UnlearnRec(Unlearner):
    """Influence Encoder pre-trained on simulated requests, then one pass + a short fine-tune."""

    params_class = UnlearnRecParams

    @classmethod
    def refusal(cls, model_class: type) -> str | None:
        """Graph models only, as in the paper (LightGCN, SGL, SimGCL backbones).  Without a graph
        the encoder has no edges to propagate the request over; measured on ml-100k ENMF
        (``private``, 2 seeds), its forgetting users' Recall@20 was 0.086 against Retrain's 0.212
        and its MIA AUC 0.589 against Retrain's 0.492 (BENCHMARKS.md)."""
        if offers(model_class, "graph"):
            return None
        instead = "AltEraser" if offers(model_class, "exact_blocks") else "IFRU"
        return (f"UnlearnRec serves graph models (e.g. LightGCN): its influence encoder propagates the request over "
                f"the model's graph, and {model_class.__name__} has none; use {instead}")

    # ---- pre-training (request-independent) -------------------------------------------------
    def encoder_meta(self, task: UnlearnTask) -> dict:
        """What a saved encoder must match to be reused."""
        keys = {f.name: getattr(self.params, f.name) for f in dataclasses.fields(self.params)}
        for k in ("finetune_epochs", "finetune_learning_rate", "encoder_path"):
            keys.pop(k)
        return {"role": "unlearnrec-encoder", "format": ENCODER_FORMAT, "model": self.config["model"],
                "dataset": self.config["dataset"], "fingerprint": data_fingerprint(task.train),
                "original": state_fingerprint(task.original), "seed": self.config["seed"], **keys}

    def encoder_path(self, task: UnlearnTask) -> Path:
        if self.params.encoder_path:
            return Path(self.params.encoder_path)
        name = f"{self.config['dataset']}-{self.config['model']}-UnlearnRec-encoder-{data_fingerprint(task.train)}.pth"
        return Path(self.config["checkpoint_dir"]) / name

    def adjacency(self, users: np.ndarray, items: np.ndarray) -> torch.Tensor:
        """Â_d of the edges (users, items), [n_nodes]² sparse."""
        return forget_adjacency(users, items, self._n_users, self._n_items, self._degrees).to(self.device)

    def pretrain(self, task: UnlearnTask) -> bool:
        p, original = self.params, require(task.original, "UnlearnRec")
        self._n_users, self._n_items = original.n_users, original.n_items
        degrees = node_degrees(task.train)
        self._degrees = degrees if p.idm_norm == "graph" else None
        share = np.minimum(1.0, p.item_share / np.maximum(degrees[original.n_users :], 1))
        self._item_share = torch.from_numpy(share).float().to(self.device) if p.item_share > 0 else None
        self.encoder = InfluenceEncoder(original.n_users + original.n_items, original.ego_embeddings().shape[1],
                                        p.encoder_layers, p.withdrawal_init).to(self.device)
        carried = {k[len("encoder."):]: v for k, v in (task.method_state or {}).items() if k.startswith("encoder.")}
        if carried:  # the next request of a chain: the encoder the previous request used
            self.encoder.load_state_dict(carried)
            self.info.update(encoder_carried=True, prepare_time_s=0.0)
            return False
        path, meta = self.encoder_path(task), self.encoder_meta(task)
        if path.is_file():
            state, saved = load_checkpoint(path)
            if all(saved.get(k) == v for k, v in meta.items()):
                self.encoder.load_state_dict(state)
                self.info.update(encoder_reused=True, encoder_path=str(path),
                                 encoder_pretrain_time_s=saved.get("pretrain_time_s"),
                                 prepare_time_s=saved.get("pretrain_time_s"))
                return False
            logger.warning("encoder %s does not match this model, data or keys: pre-training again", path)
        if p.pretrain_epochs <= 0:
            return False
        start = perf_counter()
        self._pretrain_encoder(task)
        meta["pretrain_time_s"] = perf_counter() - start
        save_checkpoint(path, self.encoder.state_dict(), meta)
        self.info.update(encoder_reused=False, encoder_path=str(path))
        return True

    def method_state(self, task: UnlearnTask, remaining) -> dict | None:
        """The encoder's weights, for the next request of a chain (they map a request and the
        current embeddings to new embeddings, so they are kept as they are)."""
        encoder = getattr(self, "encoder", None)
        return None if encoder is None else {f"encoder.{k}": v for k, v in encoder.state_dict().items()}

    def _pretrain_encoder(self, task: UnlearnTask) -> None:
        """Train the encoder on simulated requests with the backbone (a copy of Θ_a) frozen."""
        p = self.params
        backbone = copy.deepcopy(task.original).train()
        backbone.requires_grad_(False)
        n_users = backbone.n_users
        ego0, final = backbone.ego_embeddings().detach(), task.original.final_embeddings()
        with torch.no_grad():
            reference = task.original.outputs(ego0)
        optimizer = torch.optim.Adam(self.encoder.parameters(), lr=p.pretrain_learning_rate)
        rng = np.random.default_rng(self.config["seed"])
        inter = task.train.inter_feat
        users_a, items_a = inter[task.train.uid_field].numpy(), inter[task.train.iid_field].numpy()
        for epoch in range(p.pretrain_epochs):
            if epoch % max(p.request_every, 1) == 0:  # a fresh simulated request
                drop = self._simulated_request(users_a, rng)
                fu, fi = users_a[drop], items_a[drop]
                simulated = select_rows(task.train, ~drop)
                backbone.set_train_data(simulated)
                adj = self.adjacency(fu, fi)
                sampler, loader = PairSampler(simulated, rng), train_loader(self.config, simulated)
            for batch in loader:
                ego = ego0 + self.encoder(adj, final)
                loss = self._step_loss(backbone, ego, batch.to(self.device), reference, fu, fi, sampler, rng)
                if p.contrast_weight > 0:
                    loss = loss + p.contrast_weight * contrast_loss(
                        self.encoder, fu, fi, final, n_users, self.adjacency, p.contrast_drop_rate,
                        p.contrast_temperature, rng)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        self.info["pretrain_epochs"] = p.pretrain_epochs

    def _simulated_request(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Mask [n_edges] of D_a's edges a simulated request drops."""
        p = self.params
        if p.pretrain_requests == "edges":
            return rng.random(len(users)) < p.pretrain_drop_rate
        chosen = rng.random(users.max() + 1) < p.pretrain_drop_rate
        share = rng.random(users.max() + 1)
        return chosen[users] & (rng.random(len(users)) < share[users])

    def _step_loss(self, model, ego, batch, reference, fu, fi, sampler, rng) -> torch.Tensor:
        """L_model on ``batch`` + λ_u·L_unlearn on a sample of the forgotten pairs (fu, fi)
        + λ_a·L_align on remaining triples, all from one propagation of ``ego``."""
        p = self.params
        U, I = model.outputs(ego)
        pick = rng.choice(len(fu), size=min(p.aux_batch_size, len(fu)), replace=False)
        loss = model.training_loss(batch, ego=ego, outputs=(U, I))
        users = fu[pick]
        partners = sampler.negatives(len(users)) if p.unlearn_partner == "negative" else sampler.positives_of(users)
        loss = loss + p.unlearn_weight * unlearn_loss(U, I, users, fi[pick], partners, self._item_share)
        if p.align_weight > 0:
            users = sampler.edge_users(p.aux_batch_size)
            loss = loss + p.align_weight * align_loss(U, I, *reference, sampler, users)
        return loss

    # ---- a request (timed) --------------------------------------------------------------------
    def erase(self, task: UnlearnTask, remaining) -> None:
        model, request = self.model, task.request
        start = perf_counter()
        adj = self.adjacency(request.users, request.items)
        with torch.no_grad():
            delta = self.encoder(adj, task.original.final_embeddings())
            users, items = model.embedding_tables()
            users.add_(delta[: model.n_users])
            items.add_(delta[model.n_users :])
        self.info["encoder_pass_s"] = perf_counter() - start
        if self.params.finetune_epochs > 0:
            start = perf_counter()
            self._finetune(task, remaining)
            self.info["finetune_s"] = perf_counter() - start
        self.info["finetune_epochs"] = self.params.finetune_epochs

    def _finetune(self, task: UnlearnTask, remaining) -> None:
        """``finetune_epochs`` epochs of L_model(D_r) + λ_u·L_unlearn + λ_a·L_align on Θ_u."""
        if self.params.finetune_learning_rate is not None:
            self.learning_rate = float(self.params.finetune_learning_rate)
        self.reset_optimizer()
        # the same shuffles whether or not the encoder was pre-trained in this process
        init_seed(self.config["seed"], self.config["reproducibility"])
        model = self.model.train()
        with torch.no_grad():
            reference = task.original.outputs()
        rng = np.random.default_rng(self.config["seed"])
        sampler = PairSampler(remaining, rng)
        fu, fi = task.request.users, task.request.items
        loader = train_loader(self.config, remaining)
        for _ in range(self.params.finetune_epochs):
            for batch in loader:
                loss = self._step_loss(model, model.ego_embeddings(), batch.to(self.device), reference, fu, fi, sampler, rng)
                self.optimizer.zero_grad()
                loss.backward()
                self.optimizer.step()
        model.eval()
