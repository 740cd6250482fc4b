r"""Lipschitz weight constraints, applied after the optimizer (``CONSTRAINTS``).

Reference: Newhouse, Hess, Cesista, Zahorodnii, Bernstein, Isola (2025), "Training Transformers
with Enforced Lipschitz Constants", arXiv:2507.13338. After every step each weight matrix ``W``
(the matrix view of :mod:`dynamics.optim.partition`; non-matrix leaves pass through) is mapped
back into a spectral-norm ball, so the network's Lipschitz bound holds at every step:

* ``spectral_normalize``: ``W <- W / max(1, sigma_1(W) / bound)``;
* ``spectral_cap``: ``W = U S V^T <- U min(S, bound) V^T`` (every singular value capped; exact,
  by SVD: the paper's "spectral hard cap", here without the polynomial approximation);
* ``spectral_hammer``: only the top singular value is capped,
  ``W <- W - max(sigma_1 - bound, 0) u_1 v_1^T``;
* ``spectral_weight_decay``: decay only along the top singular direction,
  ``W <- W - rate * sigma_1 u_1 v_1^T``.

``sigma_1, u_1, v_1`` come from ``power_iters`` (default 3) power iterations on ``W^T W`` per
step, warm-started from the previous step's right singular vector, which is kept in the state
(as a spectral-norm layer keeps its ``u``); only the very first start is a fixed random vector
(``jax.random.key(0)``; a constant vector can be orthogonal to the top direction). This is an
approximation: ``sigma = ||W v||`` with a unit ``v`` is a lower bound of the true ``sigma_1``,
so until ``v`` has converged ``spectral_normalize`` and ``spectral_hammer`` can leave
``sigma_1`` slightly above ``bound``. Each iteration shrinks the error of ``v`` by
``(sigma_2 / sigma_1)^2``, and since the weights move little between steps the warm start keeps
accumulating iterations: on a fixed matrix the error falls below ``tol`` after about
``log(tol) / log((sigma_2 / sigma_1)^2)`` iterations in all, slowly if the top two singular
values are nearly tied. For a bound exact at every step use ``spectral_cap`` (SVD) or raise
``power_iters``.

Each transform returns ``u' = proj(p + u) - p``: chained after an update rule, the applied step
lands on the constrained weights. They need ``params`` and are layout-free (singular values do
not depend on which axis is the input).

Example:
  >>> import jax.numpy as jnp, optax
  >>> tx = optax.chain(optax.sgd(1.0), spectral_cap(bound=1.0))
  >>> p = {"w": jnp.zeros((3, 3))}
  >>> g = {"w": -2.0 * jnp.eye(3)}
  >>> u, _ = tx.update(g, tx.init(p), p)
  >>> jnp.diag(optax.apply_updates(p, u)["w"]).tolist()
  [1.0, 1.0, 1.0]
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from dynamics.optim.common import accumulation_dtype
from dynamics.optim.partition import matrix_shape, to_matrices


class PowerIterationState(NamedTuple):
    """State of the power-iteration constraints.

    Attributes:
      v: per leaf, the ``(B, n)`` estimate (at least float32) of the top right singular vector
        of each matrix in the leaf's matrix view ``(B, m, n)``; empty for non-matrix leaves.
    """

    v: optax.Params


def _is_matrix(x, batch_ndim):
    return jnp.ndim(x) >= 2 + batch_ndim


def top_singular(w: jax.Array, v: jax.Array, iters: int):
    """``(sigma, u, v)`` of each ``(B, m, n)`` matrix by ``iters`` power iterations from ``v``."""

    def body(_, v):
        v = jnp.einsum("bmn,bm->bn", w, jnp.einsum("bmn,bn->bm", w, v))
        return v / (jnp.linalg.norm(v, axis=-1, keepdims=True) + 1e-30)

    v = jax.lax.fori_loop(0, iters, body, v)
    wv = jnp.einsum("bmn,bn->bm", w, v)
    sigma = jnp.linalg.norm(wv, axis=-1)
    return sigma, wv / (sigma[:, None] + 1e-30), v


def _power_constraint(project, *, power_iters: int, batch_ndim: int):
    """Builds a constraint from ``project(w, sigma, u, v) -> w`` on ``(B, m, n)`` matrices."""

    def init_fn(params):
        def v0(p):
            if not _is_matrix(p, batch_ndim):
                return jnp.zeros((0,), jnp.float32)
            b, _, n = matrix_shape(p.shape, batch_ndim)
            # A fixed random start: a constant vector can be orthogonal to the top direction.
            v = jax.random.normal(jax.random.key(0), (b, n), accumulation_dtype(p.dtype))
            return v / jnp.linalg.norm(v, axis=-1, keepdims=True)

        return PowerIterationState(v=jax.tree.map(v0, params))

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(
                "Lipschitz constraints need params: call update(updates, state, params)"
            )

        def leaf(u, p, v):
            if not _is_matrix(p, batch_ndim):
                return u, v
            w = to_matrices(p + u, batch_ndim).astype(v.dtype)
            sigma, left, v = top_singular(w, v, power_iters)
            w = project(w, sigma[:, None, None], left, v)
            return (w.reshape(p.shape) - p).astype(u.dtype), v

        out = jax.tree.map(leaf, updates, params, state.v)
        new_updates, v = jax.tree.transpose(
            jax.tree.structure(updates), jax.tree.structure((0, 0)), out
        )
        return new_updates, PowerIterationState(v=v)

    return optax.GradientTransformation(init_fn, update_fn)


def _outer(left, right):
    return left[:, :, None] * right[:, None, :]


def spectral_normalize(
    *, bound: float = 1.0, power_iters: int = 3, batch_ndim: int = 0
) -> optax.GradientTransformation:
    """``W <- W / max(1, sigma_1(W) / bound)`` after each step (see the module docstring)."""
    return _power_constraint(
        lambda w, s, u, v: w / jnp.maximum(1.0, s / bound),
        power_iters=power_iters,
        batch_ndim=batch_ndim,
    )


def spectral_hammer(
    *, bound: float = 1.0, power_iters: int = 3, batch_ndim: int = 0
) -> optax.GradientTransformation:
    """``W <- W - max(sigma_1 - bound, 0) u_1 v_1^T``: caps the top singular value only."""
    return _power_constraint(
        lambda w, s, u, v: w - jnp.maximum(s - bound, 0.0) * _outer(u, v),
        power_iters=power_iters,
        batch_ndim=batch_ndim,
    )


def spectral_weight_decay(
    *, rate: float = 0.1, power_iters: int = 3, batch_ndim: int = 0
) -> optax.GradientTransformation:
    """``W <- W - rate sigma_1 u_1 v_1^T``: weight decay on the top singular direction only."""
    return _power_constraint(
        lambda w, s, u, v: w - rate * s * _outer(u, v),
        power_iters=power_iters,
        batch_ndim=batch_ndim,
    )


def spectral_cap(*, bound: float = 1.0, batch_ndim: int = 0) -> optax.GradientTransformation:
    """``W = U S V^T <- U min(S, bound) V^T`` by exact SVD after each step (stateless)."""

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(
                "Lipschitz constraints need params: call update(updates, state, params)"
            )

        def leaf(u, p):
            if not _is_matrix(p, batch_ndim):
                return u
            w = to_matrices(p + u, batch_ndim)
            w = w.astype(accumulation_dtype(w.dtype))
            uu, s, vt = jnp.linalg.svd(w, full_matrices=False)
            w = (uu * jnp.minimum(s, bound)[:, None, :]) @ vt
            return (w.reshape(p.shape) - p).astype(u.dtype)

        return jax.tree.map(leaf, updates, params), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)
