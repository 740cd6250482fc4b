r"""Conda: Adam whose second moment lives in the singular basis of the first moment.

Reference: "Conda: Column-Normalized Adam for Training Large Language Models Faster" (2025), and
its released code. For a matrix ``G`` of shape ``(m, n)`` (the matrix view of
:mod:`dynamics.optim.partition`) and ``k = min(m, n)``:

.. math::
    M_t = b_1 M_{t-1} + (1 - b_1) G_t, \qquad
    P \leftarrow \text{singular vectors of } M_t \text{ on the smaller side, every }
    T \text{ steps},

    \tilde G = \rho(G_t),\ \tilde M = \rho(M_t),\qquad
    V_t = b_2 V_{t-1} + (1 - b_2) \tilde G^2,\qquad
    \Delta_t = s\, \rho^{-1}\!\Big(\frac{\tilde M / (1 - b_1^t)}
    {\sqrt{V_t / (1 - b_2^t)} + \epsilon}\Big)

with ``rho(X) = U^T X`` (``U`` the ``m x m`` left singular vectors) when ``m <= n`` and
``rho(X) = X V`` (``V`` the ``n x n`` right singular vectors) otherwise; the basis is full
(``k x k``), so the rotation is orthogonal and only the element-wise normalization changes. The
basis is refreshed with ``lax.cond`` at steps ``0, T, 2T, ...`` (``T = update_proj_gap``).
Defaults: ``b1 = 0.9``, ``b2 = 0.999``, ``eps = 1e-8``, ``scale = 0.25``. Layout-free apart from
which side is smaller.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from dynamics.optim.common import accumulation_dtype
from dynamics.optim.partition import matrix_optimizer, matrix_shape, to_matrices


class CondaState(NamedTuple):
    """State of :func:`scale_by_conda`.

    Attributes:
      count: number of updates so far (int32 scalar).
      mu: first moment ``M`` per leaf, in the parameter space (at least float32).
      nu: second moment ``V`` per leaf, in the rotated space, ``(B, m, n)``.
      basis: the ``(B, k, k)`` singular basis ``P`` per leaf (``k = min(m, n)``).
    """

    count: chex.Array
    mu: optax.Updates
    nu: optax.Updates
    basis: optax.Updates


def _rotate(x, basis, left):
    return jnp.swapaxes(basis, -1, -2) @ x if left else x @ basis


def _unrotate(y, basis, left):
    return basis @ y if left else y @ jnp.swapaxes(basis, -1, -2)


def _singular_basis(m, left):
    u, _, vt = jnp.linalg.svd(m, full_matrices=False)
    return u if left else jnp.swapaxes(vt, -1, -2)


def scale_by_conda(
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    scale: float = 0.25,
    update_proj_gap: int = 2000,
    batch_ndim: int = 0,
) -> optax.GradientTransformation:
    """Conda's scaled step on matrix leaves (see the module docstring for the math).

    Example:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_conda(update_proj_gap=10)
      >>> p = {"w": jnp.arange(12.0).reshape(3, 4)}
      >>> u, s = tx.update(p, tx.init(p))
      >>> s.basis["w"].shape
      (1, 3, 3)
    """
    if update_proj_gap < 1:
        raise ValueError(f"update_proj_gap must be >= 1, got {update_proj_gap}")

    def init_fn(params):
        def basis(p):
            b, m, n = matrix_shape(p.shape, batch_ndim)
            return jnp.broadcast_to(
                jnp.eye(min(m, n), dtype=accumulation_dtype(p.dtype)), (b, min(m, n), min(m, n))
            )

        return CondaState(
            count=jnp.zeros([], jnp.int32),
            mu=jax.tree.map(lambda p: jnp.zeros_like(p, dtype=accumulation_dtype(p.dtype)), params),
            nu=jax.tree.map(
                lambda p: jnp.zeros(to_matrices(p, batch_ndim).shape, accumulation_dtype(p.dtype)),
                params,
            ),
            basis=jax.tree.map(basis, params),
        )

    def update_fn(updates, state, params=None):
        del params
        refresh = state.count % update_proj_gap == 0
        count = optax.safe_increment(state.count)

        def leaf(g, m, v, basis):
            t = count.astype(m.dtype)
            m = b1 * m + (1 - b1) * g.astype(m.dtype)
            gm, mm = to_matrices(g, batch_ndim).astype(m.dtype), to_matrices(m, batch_ndim)
            left = gm.shape[-2] <= gm.shape[-1]
            basis = jax.lax.cond(refresh, lambda: _singular_basis(mm, left), lambda: basis)
            v = b2 * v + (1 - b2) * jnp.square(_rotate(gm, basis, left))
            m_hat = _rotate(mm, basis, left) / (1 - b1**t)
            step = m_hat / (jnp.sqrt(v / (1 - b2**t)) + eps)
            out = scale * _unrotate(step, basis, left)
            return out.reshape(g.shape).astype(g.dtype), m, v, basis

        out = jax.tree.map(leaf, updates, state.mu, state.nu, state.basis)
        treedef = jax.tree.structure(updates)
        new_updates, mu, nu, basis = jax.tree.transpose(treedef, jax.tree.structure((0,) * 4), out)
        return new_updates, CondaState(count=count, mu=mu, nu=nu, basis=basis)

    return optax.GradientTransformation(init_fn, update_fn)


def conda(
    learning_rate: optax.ScalarOrSchedule,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    scale: float = 0.25,
    update_proj_gap: int = 2000,
    batch_ndim: int = 0,
    weight_decay: float = 0.0,
    labels: Any = None,
    adam_learning_rate: optax.ScalarOrSchedule | None = None,
    adam_weight_decay: float = 0.0,
) -> optax.GradientTransformationExtraArgs:
    """Conda on matrices (decoupled decay), AdamW with the same betas and eps on the rest.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = conda(1e-3, update_proj_gap=100)
      >>> p = {"w": jnp.ones((4, 8)), "b": jnp.zeros(8)}
      >>> _ = tx.update(p, tx.init(p), p)
    """
    return matrix_optimizer(
        scale_by_conda(
            b1=b1,
            b2=b2,
            eps=eps,
            scale=scale,
            update_proj_gap=update_proj_gap,
            batch_ndim=batch_ndim,
        ),
        learning_rate,
        weight_decay=weight_decay,
        labels=labels,
        batch_ndim=batch_ndim,
        adam_learning_rate=adam_learning_rate,
        adam_b1=b1,
        adam_b2=b2,
        adam_eps=eps,
        adam_weight_decay=adam_weight_decay,
    )
