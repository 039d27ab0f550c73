"""What an unlearner may ask of a model: the protocol every plugin model implements.

A model is a RecBole ``GeneralRecommender`` that also derives from :class:`UnlearnableModel`.
Unlearners use only what is written here; they never test a model's class or name.  A method
that needs an optional capability the model lacks refuses with one line (:func:`require`).

Notation: ``n_users`` / ``n_items`` include RecBole's padding id 0; the *ego* embeddings
E0 [n_users + n_items, d] are the editable tables, users first (node ``n_users + i`` is item
``i``); the *score embeddings* (U [n_users, d], I [n_items, d]) give every score as
ŷ_ui = U_u · I_i.  Pair sets are internal ids ``users``, ``items`` [m] (and, for models whose
loss compares a positive with a sampled item, ``negatives`` [m]).

Required of every model:

* ``set_train_data(dataset)`` — the training structure (history, graph) becomes ``dataset``'s;
* ``trained_pair_keys()`` — keys ``user * n_items + item`` of that structure, [n_pairs];
* ``outputs(ego=None)`` — score embeddings (U, I), differentiable in ``ego``;
* ``score_loss(u, I, interaction, history=None)`` — the training loss of one RecBole batch
  given the batch users' score vectors u [B, d] and every item's I [n_items, d], without the
  regulariser (``history``: see :meth:`UnlearnableModel.history_of`);
* ``regulariser(ego, interaction)`` — the batch's regulariser at ``ego``;
* ``pair_terms(users, items, negatives=None, ego=None)`` — the loss term of each pair, [m];
* ``objective_fn(users, items, negatives=None)`` — the full training objective on a pair set as
  a function of E0 (prepared once, evaluated many times);
* ``proba(scores)`` — the model's link from scores to probabilities.

Provided here, overridden where a model knows better: ``ego_embeddings``, ``write_ego``,
``drop_pairs`` (the structure of D_r after a request), ``training_loss``,
``final_embeddings``, ``graph`` / ``propagate`` / ``self_weights`` (graph models), ``row_objective``,
``history_of``, ``rows_without_pairs`` (where a retrain leaves a user with no training pair),
and the optional capability ``exact_blocks`` (closed-form row re-solves, as ``implicit``'s ALS
offers ``partial_fit_users``).
"""
from __future__ import annotations

from typing import Callable, ClassVar

import torch

from recbole_unlearn.errors import UnlearnInputError

Tensor = torch.Tensor


class UnlearnableModel:
    """Mixin of the protocol's shared parts; see the module docstring for what a model adds."""

    #: sampled negatives per training pair in the model's loss (BPR: 1; non-sampling ENMF: 0)
    negatives_per_pair: ClassVar[int] = 1
    #: the loss is BPR on the score embeddings of a linear propagation (``model.pairwise``),
    #: so its derivatives with respect to the outputs have a closed form
    bpr_on_outputs: ClassVar[bool] = False
    #: default λ and CG tolerance of one damped Newton step on the summed training objective
    #: (influence-function updates); they follow the loss's curvature scale
    influence_damping: ClassVar[float] = 3.0
    influence_cg_tol: ClassVar[float] = 0.1

    # ---- parameters ------------------------------------------------------------------------
    def ego_embeddings(self) -> Tensor:
        """E0 = [user table; item table], [n_users + n_items, d] (carries gradients)."""
        return torch.cat([self.user_embedding.weight, self.item_embedding.weight], dim=0)

    def embedding_tables(self) -> tuple[torch.nn.Parameter, torch.nn.Parameter]:
        """The tables an unlearner may edit: (users [n_users, d], items [n_items, d])."""
        return self.user_embedding.weight, self.item_embedding.weight

    @torch.no_grad()
    def write_ego(self, ego: Tensor) -> None:
        """Copy E0 [n_users + n_items, d] into the tables (and drop cached outputs)."""
        users, items = self.embedding_tables()
        users.copy_(ego[: self.n_users])
        items.copy_(ego[self.n_users :])
        self.clear_cache()

    def rows_without_pairs(self, users: Tensor, initial: Callable[[], Tensor]) -> Tensor:
        """The ego rows [k, d] a retrain on D_r ends with for the ``users`` [k] left with no
        training pair, given ``initial``, a function returning the rows it starts from [k, d].
        Here: those rows, for a loss that reaches a user only through the user's own pairs (BPR
        on sampled triples: such a user is in no batch, and no step moves the row)."""
        return initial()

    def clear_cache(self) -> None:
        """Forget outputs computed from the old parameters or structure."""

    # ---- losses ----------------------------------------------------------------------------
    def training_loss(self, interaction, ego: Tensor | None = None,
                      outputs: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """RecBole's training loss of one batch with E0 replaced by ``ego``; ``outputs`` are
        the score embeddings already computed from the same ``ego`` (saves a propagation)."""
        ego = self.ego_embeddings() if ego is None else ego
        U, I = self.outputs(ego) if outputs is None else outputs
        u = U[interaction[self.USER_ID]]
        return self.score_loss(u, I, interaction) + self.regulariser(ego, interaction)

    def calculate_loss(self, interaction) -> Tensor:
        self.clear_cache()
        return self.training_loss(interaction)

    def drop_pairs(self, remaining, users: Tensor, items: Tensor) -> None:
        """The training structure loses the pairs (``users``, ``items``) [m] and becomes
        ``remaining``'s (D_r, the current training data without them).  Default:
        ``set_train_data(remaining)``; a model may update its structure in place instead."""
        self.set_train_data(remaining)

    def history_of(self, dataset):
        """What :meth:`score_loss` needs to know of a training set beyond the batch (ENMF: each
        user's positives); None when the batch holds everything (sampled losses)."""
        return None

    def row_objective(self, users: Tensor, items: Tensor, negatives: Tensor | None, side: str,
                      rows: Tensor) -> Callable[[Tensor], Tensor]:
        """The objective on the pair set as a function of the ``side`` ('user' | 'item')
        vectors θ [len(rows), d] of ``rows``, everything else fixed (up to a constant)."""
        objective = self.objective_fn(users, items, negatives)
        ego0 = self.ego_embeddings().detach()
        index = rows if side == "user" else rows + self.n_users

        def loss(theta: Tensor) -> Tensor:
            return objective(ego0.index_put((index,), theta))

        return loss

    # ---- structure -------------------------------------------------------------------------
    def graph(self):
        """The normalised adjacency the outputs propagate over (sparse), or None (no graph)."""
        return None

    def propagate(self, ego: Tensor | None = None, graph=None) -> tuple[Tensor, Tensor]:
        """Score embeddings of ``ego`` through ``graph`` (None: the model's own); a model
        without a graph returns ``outputs(ego)``."""
        return self.outputs(ego)

    @torch.no_grad()
    def self_weights(self, nodes: Tensor, graph=None, chunk: int = 512) -> Tensor:
        """The self-weights c_v = ∂out_v/∂e⁰_v [len(nodes)] of the ego rows ``nodes`` (users
        first) under a linear propagation through ``graph`` (None: the model's own): here read
        off propagations of their indicator columns, ``chunk`` at a time (1 without a graph)."""
        ego = self.ego_embeddings().detach()
        out = [ego.new_zeros(0)]
        for part in torch.split(nodes, chunk):
            column = torch.arange(len(part), device=ego.device)
            indicator = ego.new_zeros(len(ego), len(part)).index_put_((part, column), ego.new_ones(len(part)))
            out.append(torch.cat(self.propagate(indicator, graph))[part, column])
        return torch.cat(out)

    @torch.no_grad()
    def final_embeddings(self) -> Tensor:
        """What each node contributes to its neighbours' scores, users first,
        [n_users + n_items, d] (a graph model: its propagated outputs)."""
        return torch.cat(self.outputs(), dim=0)

    def exact_blocks(self, users: Tensor, items: Tensor):
        """Optional: closed-form row systems of the objective on a pair set (``solve_users``,
        ``solve_items``, ``item_sums``, ``z``; see ``ENMFBlocks``), or None."""
        return None


def offers(model, capability: str) -> bool:
    """Whether ``model`` (a model or a model class) implements the optional ``capability``
    (e.g. ``exact_blocks``, or ``graph`` for a model whose outputs propagate over a graph)."""
    cls = model if isinstance(model, type) else type(model)
    return getattr(cls, capability, None) is not getattr(UnlearnableModel, capability, None)


def require(model, needed_by: str) -> "UnlearnableModel":
    """``model`` if it speaks the protocol, else one clear error line naming ``needed_by``."""
    if not isinstance(model, UnlearnableModel):
        raise UnlearnInputError(
            f"{needed_by} needs a model that implements recbole_unlearn's model protocol "
            f"(recbole_unlearn.model.protocol); {type(model).__name__} does not"
        )
    return model


__all__ = ["UnlearnableModel", "offers", "require"]
