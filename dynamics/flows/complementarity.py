"""The semidefinite complementarity problem that chooses a central flow's oscillation covariance.

Given a linear map M on symmetric k x k matrices (a tensor ``M[i, j, k, l]``, ``M(X)_ij =
sum_kl M[i, j, k, l] X_kl``) and a symmetric c, find X with

    X >= 0,    Y = M(X) - c >= 0,    <X, Y> = 0         (">= 0": positive semidefinite).

In a central flow (Cohen et al. 2025, "Understanding Optimization in Deep Learning with Central
Flows") X is the covariance of the oscillation in the basis of the top eigenvectors, Y the rate at
which the edge block of the (effective) Hessian is pushed back below the threshold: either an
eigen-direction oscillates (X > 0 there) and its eigenvalue is held at the threshold (Y = 0), or it
does not and its eigenvalue stays below. When M is symmetric and positive semidefinite (gradient
descent: ``M[ij, kl] = g_ij . g_kl / 2``, a Gram tensor) this is the optimality condition of the
convex cone program

    min_{X >= 0}  1/2 <X, M(X)> - <c, X>,

whose unique solution (for M positive definite) is found here by accelerated projected gradient
(FISTA, Beck & Teboulle 2009) with the gradient restart of O'Donoghue & Candes 2015: the
projection onto the PSD cone is one k x k ``eigh`` with the negative eigenvalues clipped. For a
nonsymmetric but monotone M (RMSProp's flow, where the oscillation also feeds the second-moment
average) the same iteration is the projection method for the variational inequality, which
converges when the symmetric part of M dominates. ``mask`` restricts X to a subset of the rows
and columns (eigen-directions outside the tracked set).

No interior-point solver: k is a handful, the problem is solved at every substep of a flow, and a
warm start from the previous substep's X makes a few dozen iterations enough.

Example:
  >>> import jax.numpy as jnp
  >>> m = jnp.einsum("ik,jl->ijkl", jnp.eye(2), jnp.eye(2))  # M(X) = X
  >>> c = jnp.diag(jnp.array([1.0, -1.0]))
  >>> jnp.round(solve(m, c, num_iters=50).x, 4)  # X = c projected on the PSD cone
  Array([[1., 0.],
         [0., 0.]], dtype=float32)
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class Solution(NamedTuple):
    """Attributes:
    x: ``[k, k]`` the PSD solution.
    y: ``[k, k]`` ``M(X) - c``, PSD at the solution.
    gap: ``<X, Y>``, zero at the solution.
    infeasibility: ``max(0, -lambda_min(Y))``, zero at the solution.
    """

    x: jax.Array
    y: jax.Array
    gap: jax.Array
    infeasibility: jax.Array


def apply(m: jax.Array, x: jax.Array) -> jax.Array:
    """M(X)_ij = sum_kl M[i, j, k, l] X_kl."""
    return jnp.einsum("ijkl,kl->ij", m, x)


def project_psd(x: jax.Array) -> jax.Array:
    """The nearest PSD matrix in Frobenius norm: eigenvalues clipped at zero."""
    values, vectors = jnp.linalg.eigh(0.5 * (x + x.T))
    return (vectors * jnp.maximum(values, 0.0)) @ vectors.T


def operator_norm(m: jax.Array) -> jax.Array:
    """||M|| as a map on k x k matrices (the largest singular value of the k^2 x k^2 matrix)."""
    k = m.shape[0]
    return jnp.linalg.norm(m.reshape(k * k, k * k), ord=2)


def solve(
    m: jax.Array,
    c: jax.Array,
    *,
    num_iters: int = 100,
    init: jax.Array | None = None,
    mask: jax.Array | None = None,
) -> Solution:
    """Solves X >= 0, M(X) - c >= 0, <X, M(X) - c> = 0 (see the module doc).

    Args:
      m: ``[k, k, k, k]`` the linear map (symmetric in its first two and last two indices).
      c: ``[k, k]`` symmetric.
      num_iters: projected-gradient iterations (static).
      init: a warm start (e.g. the previous substep's X), projected first.
      mask: ``[k]`` booleans; X is zero on the rows and columns where it is False.
    """
    k = c.shape[0]
    keep = jnp.ones(k, bool) if mask is None else mask
    support = (keep[:, None] & keep[None, :]).astype(c.dtype)
    m = support[:, :, None, None] * m * support[None, None]
    norm = operator_norm(m)
    # No curvature gradient on the support (M = 0 there): X stays at zero.
    step = jnp.where(norm > 0, 1.0 / jnp.where(norm > 0, norm, 1.0), 0.0)

    def prox(z):
        # Masking after the projection too: eigh leaves rounding-level entries off the support.
        return support * project_psd(support * (z - step * (apply(m, z) - c)))

    x0 = prox(jnp.zeros_like(c) if init is None else init.astype(c.dtype))

    def body(carry, _):
        x, z, t = carry
        x_new = prox(z)
        t_new = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * t * t))
        # Restart the momentum when it points uphill (O'Donoghue & Candes 2015).
        uphill = jnp.vdot(z - x_new, x_new - x) > 0
        t_new = jnp.where(uphill, 1.0, t_new)
        z_new = jnp.where(uphill, x_new, x_new + ((t - 1.0) / t_new) * (x_new - x))
        return (x_new, z_new, t_new), None

    one = jnp.ones((), c.dtype)
    (x, _, _), _ = jax.lax.scan(body, (x0, x0, one), None, length=num_iters)
    y = apply(m, x) - c
    y_active = support * y + (1.0 - support) * jnp.eye(k, dtype=c.dtype)
    infeasibility = jnp.maximum(0.0, -jnp.linalg.eigvalsh(0.5 * (y_active + y_active.T))[0])
    return Solution(x, y, jnp.vdot(x, y), infeasibility)
