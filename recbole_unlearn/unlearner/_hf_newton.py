"""Block optimisers for AltEraser: Hessian-free Newton and the AdamW ablation.

Hessian-free Newton follows Martens, "Deep learning via Hessian-free optimization" (ICML 2010):
Hessian-vector products by double backpropagation, the Newton system (H + μI)δ = −g solved by
conjugate gradient, a backtracking (Armijo) line search, and Levenberg–Marquardt adjustment of
μ from the ratio of actual to predicted decrease.  It needs only a differentiable block loss,
which is how AltEraser reaches models without closed-form blocks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from recbole_unlearn.numerics import conjugate_gradient

LossFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class HFSettings:
    """max_steps: Newton steps; cg_iters/cg_tol: inner CG; damping: initial μ (LM-adapted)."""

    max_steps: int = 3
    cg_iters: int = 50
    cg_tol: float = 1e-4
    damping: float = 1e-3
    grad_tol: float = 1e-6


#: θ ↦ (g, v ↦ H v) at θ: the gradient and Hessian-vector products of a block loss
Derivatives = Callable[[torch.Tensor], tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]]


def autograd_derivatives(loss_fn: LossFn) -> Derivatives:
    """``loss_fn``'s gradient and Hessian-vector products by double backpropagation."""
    def derivatives(theta: torch.Tensor):
        theta = theta.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_fn(theta), theta, create_graph=True)

        def hvp(v: torch.Tensor) -> torch.Tensor:
            (hv,) = torch.autograd.grad(grad, theta, grad_outputs=v, retain_graph=True)
            return hv.detach()

        return grad.detach(), hvp

    return derivatives


def hf_newton(loss_fn: LossFn, theta: torch.Tensor, s: HFSettings,
              derivatives: Derivatives | None = None) -> tuple[torch.Tensor, dict]:
    """Minimise ``loss_fn`` over ``theta`` (any shape) by Hessian-free Newton; returns (θ, stats).

    ``derivatives``: the loss's gradient and Hessian-vector products where they are known in
    closed form (the same values, cheaper); None: by double backpropagation.
    """
    derivatives = derivatives or autograd_derivatives(loss_fn)
    theta = theta.detach().clone()
    mu = s.damping
    stats = {"steps": 0, "cg_iters": 0}
    with torch.no_grad():
        base = float(loss_fn(theta))  # the loss at θ; each accepted step's value carries over
    for _ in range(s.max_steps):
        g, hvp = derivatives(theta)
        if torch.linalg.vector_norm(g) <= s.grad_tol:
            break
        delta, iters, damped = conjugate_gradient(hvp, -g, mu, s.cg_tol, s.cg_iters, with_product=True)
        curvature = torch.sum(delta * damped) - mu * torch.sum(delta * delta)  # δᵀHδ, from CG's own products
        predicted = float(torch.sum(g * delta) + 0.5 * curvature)
        step, new_loss = 1.0, base
        with torch.no_grad():
            for _ in range(20):  # Armijo backtracking
                new_loss = float(loss_fn(theta + step * delta))
                if new_loss <= base + 1e-4 * step * float(torch.sum(g * delta)):
                    break
                step *= 0.5
            else:
                step = 0.0
        theta = theta + step * delta
        ratio = (new_loss - base) / predicted if predicted < 0 else 0.0
        mu = mu * 2 / 3 if ratio > 0.75 else (mu * 1.5 if ratio < 0.25 else mu)
        base = new_loss
        stats["steps"] += 1
        stats["cg_iters"] += iters
        if step == 0.0:
            break
    return theta.detach(), stats


def adamw_minimise(loss_fn: LossFn, theta: torch.Tensor, lr: float, steps: int, weight_decay: float = 0.0):
    """The first-order ablation: ``steps`` AdamW updates of ``theta`` on ``loss_fn``."""
    theta = theta.detach().clone().requires_grad_(True)
    opt = torch.optim.AdamW([theta], lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(theta).backward()
        opt.step()
    return theta.detach(), {"steps": steps}
