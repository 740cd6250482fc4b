"""Shampoo (Gupta et al. 2018; Anil et al. 2020, "Scalable Second Order Optimization").

For a matrix gradient ``G`` (m x n) Shampoo keeps two Kronecker statistics

    L <- b2 L + (1 - b2) G G^T,      R <- b2 R + (1 - b2) G^T G      (b2 = 1: plain sums)

and steps along ``L^(-1/4) G R^(-1/4)``; a k-axis tensor uses one statistic per axis and the
exponent ``-1/(2k)`` on each. The inverse roots come from ``eigh`` with a ridge relative to the
largest eigenvalue, ``(S + eps lambda_max I)^(-1/p)``, and are recomputed only every
``precondition_every`` steps (under ``lax.cond``), from ``start_preconditioning_step`` on.

Grafting (Agarwal et al. 2020) takes the *direction* from Shampoo and the *size* from a simpler
rule, block by block: ``D = P * ||A|| / ||P||`` where ``A`` is the Adam (RMSProp with bias
correction, same ``b2``) or SGD step. Before the first refresh the grafted rule itself is used.
The result goes through momentum, ``m <- b1 m + (1 - b1) D``, bias corrected (as Distributed
Shampoo does, momentum acts on the preconditioned step).

Large tensors: factored axes longer than ``block_size`` are cut into blocks, each with its own
statistics (zero padding completes the last block). Axes longer than ``max_preconditioner_dim``
carry no factor, and tensors with fewer than two axes (biases, norms) fall back to the diagonal
(Adam) step. ``one_sided=True`` keeps only the factor of the shortest axis, i.e. ``L^(-1/2) G``,
the one-sided ablation of "What Really Matters in Matrix-Whitening Optimizers?" (2025).

Layout: the rule treats every axis alike, so Flax ``(in, out)`` and PyTorch ``(out, in)`` kernels
are handled identically (``L`` is simply the statistic of the first axis).

Example:
  >>> import jax.numpy as jnp, optax
  >>> from dynamics.optim.shampoo import shampoo
  >>> params = {"w": jnp.ones((4, 3)), "b": jnp.zeros(3)}
  >>> tx = shampoo(1e-2, precondition_every=1, start_preconditioning_step=1)
  >>> state = tx.init(params)
  >>> updates, state = tx.update(params, state, params)
  >>> params = optax.apply_updates(params, updates)
"""

from __future__ import annotations

import math
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from dynamics.optim import kronecker_factors as kr
from dynamics.optim.common import accumulation_dtype

GRAFTS = ("adam", "sgd", "none")


class ShampooState(NamedTuple):
    """State of :func:`scale_by_shampoo`.

    Attributes:
      count: number of updates so far (int32).
      mu: momentum of the grafted Shampoo step, like the parameters.
      nu: EMA of squared gradients (the diagonal preconditioner used for Adam grafting, before the
        first refresh and for leaves without factors), like the parameters.
      stats: per leaf, a tuple with one ``[num_blocks, b, b]`` statistic per axis (``None`` for an
        axis without a factor).
      roots: per leaf, the inverse roots of ``stats`` in use, same shapes (identity at first).
    """

    count: chex.Array
    mu: optax.Updates
    nu: optax.Updates
    stats: chex.ArrayTree
    roots: chex.ArrayTree


def _ema(old, new, decay):
    """``decay old + (1 - decay) new``, or the running sum ``old + new`` when ``decay == 1``.

    ``decay`` may be an array (``optax.inject_hyperparams``), so the choice is a ``where``.
    """
    weight = jnp.where(decay == 1.0, 1.0, 1.0 - decay)
    return (decay * old + weight * new).astype(old.dtype)


def _block_norms(x: jax.Array) -> jax.Array:
    """Frobenius norm of every block of a ``[num_blocks, ...]`` stack, broadcastable against it."""
    axes = tuple(range(1, x.ndim))
    return jnp.sqrt(jnp.sum(x * x, axis=axes, keepdims=True))


def scale_by_shampoo(
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    matrix_eps: float = 1e-6,
    precondition_every: int = 10,
    start_preconditioning_step: int = 10,
    graft: str = "adam",
    block_size: int | None = 1024,
    max_preconditioner_dim: int = 4096,
    one_sided: bool = False,
    exponent: float | None = None,
) -> optax.GradientTransformation:
    """Shampoo's preconditioned, grafted and momentum-averaged step (see the module docstring).

    Args:
      b1: momentum of the grafted step (0 disables it).
      b2: decay of the Kronecker statistics and of the diagonal second moment; 1.0 accumulates
        sums (the original AdaGrad-style Shampoo).
      eps: added to ``sqrt(nu_hat)`` in the diagonal (Adam) step.
      matrix_eps: ridge relative to the largest eigenvalue of each statistic.
      precondition_every: steps between two recomputations of the inverse roots.
      start_preconditioning_step: first step that uses (and computes) the inverse roots.
      graft: ``"adam"``, ``"sgd"`` (the step takes that rule's norm per block) or ``"none"``.
      block_size: factored axes longer than this are split in blocks (``None``: never).
      max_preconditioner_dim: axes longer than this carry no factor.
      one_sided: keep only the factor of the shortest axis.
      exponent: the root ``p`` of every factor; default ``2 * (number of factored axes)``.
    """
    if graft not in GRAFTS:
        raise ValueError(f"graft must be one of {GRAFTS}, got {graft!r}")

    def layout(shape):
        axes = kr.factored_axes(shape, max_preconditioner_dim, one_sided)
        return axes, kr.block_shape(shape, axes, block_size)

    def init_fn(params):
        leaves, treedef = jax.tree.flatten(params)
        stats, roots = [], []
        for p in leaves:
            axes, blocks = layout(p.shape)
            n = math.prod(-(-d // b) for d, b in zip(p.shape, blocks, strict=True))
            dtype = accumulation_dtype(p.dtype)
            stats.append(
                tuple(
                    jnp.zeros((n, b, b), dtype) if u else None
                    for u, b in zip(axes, blocks, strict=True)
                )
            )
            roots.append(
                tuple(
                    jnp.tile(jnp.eye(b, dtype=dtype), (n, 1, 1)) if u else None
                    for u, b in zip(axes, blocks, strict=True)
                )
            )
        return ShampooState(
            count=jnp.zeros([], jnp.int32),
            mu=optax.tree.zeros_like(params),
            nu=optax.tree.zeros_like(params),
            stats=treedef.unflatten(stats),
            roots=treedef.unflatten(roots),
        )

    def compute_roots(stats_leaves, shapes):
        out = []
        for leaf, shape in zip(stats_leaves, shapes, strict=True):
            p = exponent or 2 * sum(layout(shape)[0])
            root = jax.vmap(lambda s, p=p: kr.inverse_pth_root(s, p, matrix_eps))
            out.append(tuple(None if s is None else root(s) for s in leaf))
        return out

    def update_fn(updates, state, params=None):
        del params
        count = optax.safe_increment(state.count)
        leaves, treedef = jax.tree.flatten(updates)
        shapes = [g.shape for g in leaves]
        stats_leaves = treedef.flatten_up_to(state.stats)

        new_stats = []
        for g, leaf in zip(leaves, stats_leaves, strict=True):
            axes, blocks = layout(g.shape)
            if not any(axes):
                new_stats.append(leaf)
                continue
            gb = kr.to_blocks(g.astype(accumulation_dtype(g.dtype)), blocks)
            grams = jax.vmap(lambda x, axes=axes: kr.gram_matrices(x, axes))(gb)
            new_stats.append(
                tuple(
                    None if s is None else _ema(s, c, b2) for s, c in zip(leaf, grams, strict=True)
                )
            )

        refresh = (count >= start_preconditioning_step) & (
            (count - start_preconditioning_step) % precondition_every == 0
        )
        roots_leaves = jax.lax.cond(
            refresh,
            lambda s: compute_roots(s, shapes),
            lambda _: treedef.flatten_up_to(state.roots),
            new_stats,
        )

        nu = jax.tree.map(
            lambda v, g: _ema(v, jnp.square(g.astype(accumulation_dtype(g.dtype))), b2),
            state.nu,
            updates,
        )
        bc2 = jnp.where(b2 == 1.0, 1.0, 1.0 - b2**count)
        preconditioning = count >= start_preconditioning_step

        directions = []
        for g, v, roots in zip(leaves, jax.tree.leaves(nu), roots_leaves, strict=True):
            g = g.astype(accumulation_dtype(g.dtype))
            adam = g / (jnp.sqrt(v / bc2) + eps)
            axes, blocks = layout(g.shape)
            if not any(axes):
                directions.append(adam)
                continue
            pre = jax.vmap(kr.mode_product)(kr.to_blocks(g, blocks), roots)
            if graft != "none":
                target = kr.to_blocks(adam if graft == "adam" else g, blocks)
                norm = _block_norms(pre)
                pre = pre * _block_norms(target) / jnp.where(norm > 0, norm, 1.0)
            before = g if graft == "sgd" else adam
            directions.append(jnp.where(preconditioning, kr.from_blocks(pre, g.shape), before))

        # b1 = 0 needs no branch: 1 - 0**count = 1 from the first step on.
        mu = [
            (b1 * m + (1.0 - b1) * d).astype(m.dtype)
            for m, d in zip(jax.tree.leaves(state.mu), directions, strict=True)
        ]
        out = [
            (b1 * m + (1.0 - b1) * d) / (1.0 - b1**count)
            for m, d in zip(jax.tree.leaves(state.mu), directions, strict=True)
        ]
        new_state = ShampooState(
            count=count,
            mu=treedef.unflatten(mu),
            nu=nu,
            stats=treedef.unflatten(new_stats),
            roots=treedef.unflatten(roots_leaves),
        )
        out = [o.astype(g.dtype) for o, g in zip(out, leaves, strict=True)]
        return treedef.unflatten(out), new_state

    return optax.GradientTransformation(init_fn, update_fn)


def shampoo(
    learning_rate: optax.ScalarOrSchedule,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    matrix_eps: float = 1e-6,
    precondition_every: int = 10,
    start_preconditioning_step: int = 10,
    graft: str = "adam",
    block_size: int | None = 1024,
    max_preconditioner_dim: int = 4096,
    one_sided: bool = False,
    exponent: float | None = None,
    weight_decay: float = 0.0,
) -> optax.GradientTransformation:
    """Shampoo with grafting and decoupled weight decay: ``p <- p - lr (D + wd p)``."""
    return optax.chain(
        scale_by_shampoo(
            b1=b1,
            b2=b2,
            eps=eps,
            matrix_eps=matrix_eps,
            precondition_every=precondition_every,
            start_preconditioning_step=start_preconditioning_step,
            graft=graft,
            block_size=block_size,
            max_preconditioner_dim=max_preconditioner_dim,
            one_sided=one_sided,
            exponent=exponent,
        ),
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_learning_rate(learning_rate),
    )
