"""UnlearnRec's Influence Encoder, its losses and the backbone views it works through.

Chen, Xia & Huang, "Pre-training for Recommendation Unlearning", SIGIR 2025.

Given the edges to forget E_d and the trained model, the encoder predicts a change Δ of the
ego (layer-0) embeddings E0 [n_nodes, d] (n_nodes = n_users + n_items, users first):

    Â_d           normalised adjacency D^-1/2 A D^-1/2 of E_d only (influence dependency matrix)
    X_0 = Z ⊙ m,  X_{l+1} = Â_d X_l,  S = Σ_{l=0..L} X_l     Z learnable node states (zeros),
                                                           m = 1 on nodes touched by E_d
    W_0 = E_fin ⊙ w,  W_{l+1} = Â_d W_l,  W̄ = mean_{l=1..L} W_l    E_fin trained final embeddings,
                                                           w learnable per-node weights (ones)
    Δ = MLP(S − β·W̄),  MLP(x) = x + W_2·LeakyReLU(W_1 x)  (W_1 = I, W_2 = 0: identity at start)

W̄ is the layer mean of W_1..W_L (the paper writes W_L): on a bipartite graph W_L of an even L
holds only same-side nodes, while W_1 withdraws the forgotten neighbours themselves.  Δ is
zero on every node that E_d does not touch (the MLP has no bias), so E0 + Δ changes only the
rows of the request's users and items; the backbone then runs on the remaining graph.
E_fin is the backbone's ``final_embeddings`` (its propagated outputs, or for a model without a
graph its rows scaled as in its scores).

Losses (all means over sampled pairs; ŷ_ui = U_u·I_i, the backbone's ``outputs``):
    L_unlearn  = softplus(ŷ_uf − ŷ_up)     forgotten (u, f) pushed below a remaining positive p
                                           of u (a random item if u has none left)
    L_align    = KL(Bern(σ(m⁰)) ‖ Bern(σ(m)))   m = ŷ_ui − ŷ_uj on remaining triples, m⁰ the
                                           original model's: its score distribution is kept
    L_contrast = InfoNCE(Δ', Δ'') over touched nodes, Δ', Δ'' from two edge-dropped Â_d
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from recbole_unlearn.data.remaining import pairs
from recbole_unlearn.errors import UnlearnInputError
from recbole_unlearn.numerics import normalized_adjacency

#: version of the encoder and its losses; a saved encoder of another version is pre-trained again
ENCODER_FORMAT = 5


class InfluenceEncoder(nn.Module):
    """Maps (Â_d, E_fin) to ΔE0 [n_nodes, d]; see the module docstring."""

    def __init__(self, n_nodes: int, dim: int, n_layers: int = 2, withdrawal_init: float = 1.0):
        super().__init__()
        if n_layers < 1:
            raise UnlearnInputError(f"encoder_layers must be >= 1, not {n_layers}")
        self.n_layers = n_layers
        self.state = nn.Parameter(torch.zeros(n_nodes, dim))  # Z
        self.node_weight = nn.Parameter(torch.ones(n_nodes, 1))  # w
        self.beta = nn.Parameter(torch.tensor(float(withdrawal_init)))
        self.hidden = nn.Linear(dim, dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)
        with torch.no_grad():
            self.hidden.weight.copy_(torch.eye(dim))
            self.out.weight.zero_()

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        """Residual two-layer MLP, identity at initialisation, MLP(0) = 0; [N, d] -> [N, d]."""
        return x + self.out(F.leaky_relu(self.hidden(x)))

    def forward(self, adj: torch.Tensor, final: torch.Tensor) -> torch.Tensor:
        """Δ for the edges of ``adj`` (Â_d, sparse [n_nodes]²); ``final`` is E_fin [n_nodes, d]."""
        touched = torch.zeros(adj.shape[0], 1, device=final.device)
        touched[adj.indices()[0]] = 1.0
        x = self.state * touched
        s, w, w_sum = x, final * self.node_weight, torch.zeros_like(final)
        for _ in range(self.n_layers):
            x = torch.sparse.mm(adj, x)
            w = torch.sparse.mm(adj, w)
            s, w_sum = s + x, w_sum + w
        return self.mlp(s - self.beta * w_sum / self.n_layers)


def forget_adjacency(
    users: np.ndarray, items: np.ndarray, n_users: int, n_items: int, degrees: np.ndarray | None = None
) -> torch.Tensor:
    """Â_d over the forgotten edges only, sparse [n_nodes]².

    ``degrees`` None: D^-1/2 A_d D^-1/2 with the request's own degrees.  Given the node degrees
    of D_a ([n_nodes]), each forgotten edge gets its weight in D_a's normalised adjacency,
    1/sqrt(deg_u·deg_i): W_1 is then what the forgotten edges contributed to the first
    propagation layer, and its size follows the share of a node's edges that is forgotten.
    """
    if degrees is None:
        return normalized_adjacency(users, items, n_users, n_items)
    key = np.unique(np.asarray(users, dtype=np.int64) * n_items + np.asarray(items, dtype=np.int64))
    rows = np.concatenate([key // n_items, key % n_items + n_users])
    cols = np.concatenate([key % n_items + n_users, key // n_items])
    inv_sqrt = np.zeros(len(degrees))
    inv_sqrt[degrees > 0] = np.asarray(degrees, dtype=np.float64)[degrees > 0] ** -0.5
    vals = torch.from_numpy(inv_sqrt[rows] * inv_sqrt[cols]).float()
    n = n_users + n_items
    return torch.sparse_coo_tensor(torch.from_numpy(np.stack([rows, cols])), vals, (n, n), check_invariants=False).coalesce()


def node_degrees(dataset) -> np.ndarray:
    """Degrees of the bipartite graph of ``dataset``'s interactions, users first, [n_nodes]."""
    users, items = (x.numpy() for x in pairs(dataset))
    return np.concatenate([np.bincount(users, minlength=dataset.user_num),
                           np.bincount(items, minlength=dataset.item_num)])


# ---- sampling and losses --------------------------------------------------------------------
class PairSampler:
    """Random triples and per-user positives of one dataset's interactions (numpy RNG)."""

    def __init__(self, dataset, rng: np.random.Generator):
        users, items = (x.numpy() for x in pairs(dataset))
        order = np.argsort(users, kind="stable")
        self.users, self.items = users[order], items[order]
        self.counts = np.bincount(self.users, minlength=dataset.user_num)
        self.starts = np.cumsum(self.counts) - self.counts
        self.n_items = dataset.item_num
        self.rng = rng

    def positives_of(self, users: np.ndarray) -> np.ndarray:
        """One random positive item per user ([B]); a random item for users without any."""
        counts = self.counts[users]
        pick = self.starts[users] + (self.rng.random(len(users)) * np.maximum(counts, 1)).astype(np.int64)
        random_items = self.rng.integers(1, self.n_items, size=len(users))
        return np.where(counts > 0, self.items[np.minimum(pick, len(self.items) - 1)], random_items)

    def edge_users(self, n: int) -> np.ndarray:
        """Users of n random edges (users weighted by degree), [n]."""
        return self.users[self.rng.integers(0, len(self.users), size=n)]

    def negatives(self, n: int) -> np.ndarray:
        """Uniform random items, [n]."""
        return self.rng.integers(1, self.n_items, size=n)

    def triples(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(users, positives, uniform negatives), each [n]."""
        idx = self.rng.integers(0, len(self.users), size=n)
        return self.users[idx], self.items[idx], self.rng.integers(1, self.n_items, size=n)


def _score(U: torch.Tensor, I: torch.Tensor, u: np.ndarray, i: np.ndarray) -> torch.Tensor:
    return (U[torch.from_numpy(u)] * I[torch.from_numpy(i)]).sum(-1)


def unlearn_loss(
    U, I, users: np.ndarray, items: np.ndarray, partners: np.ndarray, item_share: torch.Tensor | None = None
) -> torch.Tensor:
    """mean softplus(ŷ_uf − ŷ_up) over forgotten pairs (users, items), p = ``partners`` [B].

    The user side takes the full gradient.  A forgotten item f receives its gradient scaled by
    ``item_share[f]`` (1/deg_a(f): one edge's share in what the item learned), so a rare item
    memorising a few users is corrected while a popular item is not pushed down for everyone;
    None holds the items fixed.  The partner's representation is always held fixed.
    """
    f, p = torch.from_numpy(items), torch.from_numpy(partners)
    I_f = I[f].detach()
    if item_share is not None:
        I_f = I_f + item_share[f].unsqueeze(1) * (I[f] - I_f)
    u = U[torch.from_numpy(users)]
    return F.softplus((u * I_f).sum(-1) - (u * I[p].detach()).sum(-1)).mean()


def align_loss(U, I, U0, I0, sampler: PairSampler, users: np.ndarray) -> torch.Tensor:
    """Bernoulli KL of the pairwise preferences σ(ŷ_ui − ŷ_uj), original (U0, I0) vs (U, I),
    on one triple per entry of ``users`` [B]: i a remaining positive of u, j a random item."""
    i, j = sampler.positives_of(users), sampler.negatives(len(users))
    with torch.no_grad():
        m0 = _score(U0, I0, users, i) - _score(U0, I0, users, j)
    m = _score(U, I, users, i) - _score(U, I, users, j)
    p0 = torch.sigmoid(m0)
    return (p0 * (F.logsigmoid(m0) - F.logsigmoid(m)) + (1 - p0) * (F.logsigmoid(-m0) - F.logsigmoid(-m))).mean()


def contrast_loss(
    encoder: InfluenceEncoder, users: np.ndarray, items: np.ndarray, final: torch.Tensor, n_users: int, adjacency,
    drop: float, tau: float, rng: np.random.Generator, max_nodes: int = 1024,
) -> torch.Tensor:
    """InfoNCE between the encoder's outputs on two edge-dropped views of the request;
    ``adjacency(users, items)`` builds Â_d of an edge set."""
    views = []
    for _ in range(2):
        keep = rng.random(len(users)) >= drop
        views.append(encoder(adjacency(users[keep], items[keep]), final))
    nodes = np.unique(np.concatenate([users, items + n_users]))
    nodes = torch.from_numpy(rng.choice(nodes, size=min(max_nodes, len(nodes)), replace=False))
    a, b = (F.normalize(v[nodes], dim=-1) for v in views)
    logits = a @ b.T / tau
    target = torch.arange(len(nodes))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
