"""SPlus: sign descent in Shampoo's eigenbasis (Frans, Levine, Abbeel 2025, arXiv:2506.07254).

For a matrix ``G`` (m x n), with momentum ``M`` and eigenbases ``Q_L``, ``Q_R`` of the EMAs of
``G G^T`` and ``G^T G``:

    M <- b1 M + (1 - b1) G
    U = Q_L sign(Q_L^T M Q_R) Q_R^T * 2 / (m + n)           (shape-aware scaling)
    L <- b2 L + (1 - b2) G G^T,      R <- b2 R + (1 - b2) G^T G
    Q_L, Q_R <- eigh(L + eps I), eigh(R + eps I)   at step 1 and every ``inverse_every`` steps

The step uses the bases from before the current statistics (the refresh comes after it, as in
the reference code ``kvfrans/splus``), so step 1 is plain sign descent. A side longer than
``max_dim`` is not rotated; leaves that are not matrices take the sign step scaled by
``nonstandard_constant`` (0.001) instead of ``2 / (m + n)`` (the released PyTorch code also
uses it for matrices with a long side; its optax version, like this one, does not). Because the
sign has unit entries, the learning rate is "per unit of width"; the paper's default is 0.1.

Evaluation uses the parameter EMA ``e <- r e + (1 - r) w`` (``r = ema_rate``, before the step's
update), debiased: :func:`splus_eval_params` returns ``e / (1 - r^t)``.

Differences from the reference: weight decay here is ``add_decayed_weights`` before the learning
rate, while the reference also multiplies it by the shape factor; the shape factor is the paper's
``2 / (m + n)`` (the released PyTorch code computes ``1 / (m + n) / 2``, a constant factor 4
smaller, absorbed in its learning rate). Layout: both sides are treated alike, so Flax
``(in, out)`` and PyTorch ``(out, in)`` kernels give the same rule.

Example:
  >>> import jax.numpy as jnp, optax
  >>> from dynamics.optim.splus import splus, splus_eval_params
  >>> params = {"w": jnp.ones((4, 3)), "b": jnp.zeros(3)}
  >>> tx = splus(0.1)
  >>> state = tx.init(params)
  >>> updates, state = tx.update(params, state, params)
  >>> params = optax.apply_updates(params, updates)
  >>> eval_params = splus_eval_params(state)
"""

from __future__ import annotations

from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from dynamics.optim import kronecker_factors as kr
from dynamics.optim.common import accumulation_dtype


class SPlusState(NamedTuple):
    """State of :func:`scale_by_splus`.

    Attributes:
      count: number of updates so far (int32).
      mu: momentum of the gradients, like the parameters.
      ema: EMA of the parameters (not debiased), like the parameters.
      stats: per leaf, ``(L, R)`` EMAs of ``G G^T`` and ``G^T G`` (``None`` for an unrotated side;
        an empty tuple for non-matrix leaves).
      basis: per leaf, the eigenbases in use, same shapes as ``stats``.
      ema_rate: the EMA rate, kept so that :func:`splus_eval_params` needs only the state.
    """

    count: chex.Array
    mu: optax.Updates
    ema: optax.Params
    stats: chex.ArrayTree
    basis: chex.ArrayTree
    ema_rate: chex.Array


def scale_by_splus(
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    ema_rate: float = 0.999,
    eps: float = 1e-30,
    inverse_every: int = 100,
    max_dim: int = 10000,
    nonstandard_constant: float = 0.001,
) -> optax.GradientTransformation:
    """SPlus's shape-scaled sign step in the eigenbasis (see the module docstring).

    Args:
      b1: momentum decay.
      b2: decay of the side statistics.
      ema_rate: decay of the parameter EMA used for evaluation.
      eps: ridge added before ``eigh``.
      inverse_every: steps between two eigendecompositions (and at step 1).
      max_dim: sides longer than this are not rotated.
      nonstandard_constant: step scale of non-matrix leaves.
    """

    def init_fn(params):
        leaves, treedef = jax.tree.flatten(params)
        stats, basis = [], []
        for p in leaves:
            dtype = accumulation_dtype(p.dtype)
            sides = p.shape if p.ndim == 2 else ()
            stats.append(tuple(jnp.zeros((d, d), dtype) if d <= max_dim else None for d in sides))
            basis.append(tuple(jnp.eye(d, dtype=dtype) if d <= max_dim else None for d in sides))
        return SPlusState(
            count=jnp.zeros([], jnp.int32),
            mu=optax.tree.zeros_like(params),
            ema=optax.tree.zeros_like(params),
            stats=treedef.unflatten(stats),
            basis=treedef.unflatten(basis),
            ema_rate=jnp.asarray(ema_rate, float),
        )

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(optax.NO_PARAMS_MSG)
        count = optax.safe_increment(state.count)
        leaves, treedef = jax.tree.flatten(updates)
        mu = [
            (b1 * m + (1.0 - b1) * g).astype(m.dtype)
            for m, g in zip(jax.tree.leaves(state.mu), leaves, strict=True)
        ]
        basis = treedef.flatten_up_to(state.basis)
        out = []
        for m, qs, g in zip(mu, basis, leaves, strict=True):
            m = m.astype(accumulation_dtype(m.dtype))
            if qs:
                u = kr.mode_product(jnp.sign(kr.mode_product(m, qs, transpose=True)), qs)
            else:
                u = jnp.sign(m)
            scale = 2.0 / sum(g.shape) if g.ndim == 2 else nonstandard_constant
            out.append((scale * u).astype(g.dtype))

        stats = []
        for g, leaf in zip(leaves, treedef.flatten_up_to(state.stats), strict=True):
            g = g.astype(accumulation_dtype(g.dtype))
            grams = (g @ g.T, g.T @ g) if leaf else ()
            stats.append(
                tuple(
                    None if s is None else (b2 * s + (1.0 - b2) * c).astype(s.dtype)
                    for s, c in zip(leaf, grams, strict=True)
                )
            )

        def eigenbases(stats):
            return [
                tuple(
                    None if s is None else jnp.linalg.eigh(s + eps * jnp.eye(s.shape[0]))[1]
                    for s in leaf
                )
                for leaf in stats
            ]

        refresh = (count == 1) | (count % inverse_every == 0)
        basis = jax.lax.cond(refresh, eigenbases, lambda _: basis, stats)
        ema = jax.tree.map(
            lambda e, p: (ema_rate * e + (1.0 - ema_rate) * p).astype(e.dtype), state.ema, params
        )
        new_state = SPlusState(
            count=count,
            mu=treedef.unflatten(mu),
            ema=ema,
            stats=treedef.unflatten(stats),
            basis=treedef.unflatten(basis),
            ema_rate=state.ema_rate,
        )
        return treedef.unflatten(out), new_state

    return optax.GradientTransformation(init_fn, update_fn)


def splus_eval_params(opt_state: Any) -> optax.Params:
    """The debiased parameter EMA ``e / (1 - r^t)`` to evaluate an SPlus run with.

    ``opt_state`` is the state of :func:`splus` (or of any chain or wrapper that contains one
    ``SPlusState``). Before the first step there is no average; the EMA is then all zeros.
    """
    found = [
        s
        for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, SPlusState))
        if isinstance(s, SPlusState)
    ]
    if len(found) != 1:
        raise ValueError(f"expected one SPlusState in the optimizer state, found {len(found)}")
    state = found[0]
    debias = 1.0 - state.ema_rate ** jnp.maximum(state.count, 1)
    return jax.tree.map(lambda e: (e / debias).astype(e.dtype), state.ema)


def splus(
    learning_rate: optax.ScalarOrSchedule = 0.1,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    ema_rate: float = 0.999,
    eps: float = 1e-30,
    inverse_every: int = 100,
    max_dim: int = 10000,
    nonstandard_constant: float = 0.001,
    weight_decay: float = 1e-2,
) -> optax.GradientTransformation:
    """SPlus with decoupled weight decay ``p <- p - lr (U + wd p)``; evaluate with the EMA."""
    return optax.chain(
        scale_by_splus(
            b1=b1,
            b2=b2,
            ema_rate=ema_rate,
            eps=eps,
            inverse_every=inverse_every,
            max_dim=max_dim,
            nonstandard_constant=nonstandard_constant,
        ),
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_learning_rate(learning_rate),
    )
