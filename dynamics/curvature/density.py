"""Spectral density of a Hessian by stochastic Lanczos quadrature (SLQ).

For a unit vector v and the Lanczos tridiagonal T_m = S diag(theta) S^T started at v, the Gauss
quadrature rule with nodes theta_j and weights w_j = S_{0j}^2 integrates exactly every polynomial of
degree <= 2m - 1 against the spectral measure of v: sum_j w_j theta_j^p = v^T A^p v (Golub & Meurant
2010). Averaging over random v (E[v v^T] = I/n) estimates the normalized density
(1/n) sum_i delta(x - lambda_i); smoothing every node by a Gaussian of width ``sigma`` gives a curve
on a grid (Ghorbani, Krishnan & Xiao 2019; Papyan 2018). Moments: the mean over probes of
sum_j w_j theta_j^p estimates tr(A^p)/n without bias.

Example:
  >>> import jax, jax.numpy as jnp
  >>> a = jnp.diag(jnp.array([1.0, 2.0, 3.0, 4.0]))
  >>> d = slq(lambda v: a @ v, jnp.ones(4), key=jax.random.key(0), num_probes=2, num_iters=4)
  >>> jnp.round(d.weights.sum(axis=1), 4)  # each probe's quadrature is a probability measure
  Array([1., 1.], dtype=float32)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from dynamics.curvature import tree
from dynamics.curvature.compile import eager_cached
from dynamics.curvature.hvp import hvp
from dynamics.curvature.lanczos import lanczos, ritz
from dynamics.curvature.operators import microbatch_mean

PyTree = Any


class SpectralDensity(NamedTuple):
    """Attributes:
    grid: ``[num_points]`` eigenvalue axis.
    density: ``[num_points]`` smoothed density (integrates to ~1 over the grid).
    nodes: ``[num_probes, m]`` Ritz values of every probe.
    weights: ``[num_probes, m]`` their quadrature weights (each row sums to 1).
    """

    grid: jax.Array
    density: jax.Array
    nodes: jax.Array
    weights: jax.Array


def lanczos_quadrature(
    matvec: Callable[[PyTree], PyTree], v0: PyTree, num_iters: int
) -> tuple[jax.Array, jax.Array]:
    """Gauss quadrature nodes and weights of the spectral measure of ``v0 / ||v0||``."""
    theta, s, valid = ritz(lanczos(matvec, v0, num_iters))
    return theta, jnp.where(valid, s[0] ** 2, 0.0)


def gaussian_smoothing(
    nodes: jax.Array, weights: jax.Array, grid: jax.Array, sigma: jax.Array
) -> jax.Array:
    """mean over probes of sum_j w_j N(x; theta_j, sigma^2) at every grid point x."""
    z = (grid[:, None, None] - nodes[None]) / sigma
    kernel = jnp.exp(-0.5 * z**2) / (sigma * jnp.sqrt(2 * jnp.pi))
    return jnp.mean(jnp.sum(kernel * weights[None], axis=-1), axis=-1)


def slq(
    matvec: Callable[[PyTree], PyTree],
    like: PyTree,
    *,
    key: jax.Array,
    num_probes: int = 8,
    num_iters: int = 60,
    num_points: int = 512,
    sigma: float | None = None,
    grid: jax.Array | None = None,
) -> SpectralDensity:
    """Stochastic Lanczos quadrature with Gaussian probes.

    Args:
      matvec: ``v -> A v`` for a symmetric A.
      like: a vector shaped like A's domain.
      key: probe randomness.
      num_probes: independent starting vectors.
      num_iters: Lanczos steps per probe (exact moments up to degree 2 num_iters - 1).
      num_points: grid size when ``grid`` is None (the grid then spans the Ritz values with a
        margin of 3 sigma).
      sigma: smoothing width; by default 1% of the range of the Ritz values.
      grid: evaluation points, overriding ``num_points``.
    """
    keys = jax.random.split(key, num_probes)

    def one(k):
        return lanczos_quadrature(matvec, tree.normal_like(k, like), num_iters)

    nodes, weights = jax.lax.map(one, keys)
    lo, hi = jnp.min(nodes), jnp.max(nodes)
    if sigma is None:
        sigma = 0.01 * jnp.maximum(hi - lo, jnp.finfo(nodes.dtype).tiny)
    if grid is None:
        grid = jnp.linspace(lo - 3 * sigma, hi + 3 * sigma, num_points)
    return SpectralDensity(grid, gaussian_smoothing(nodes, weights, grid, sigma), nodes, weights)


@eager_cached(
    static_argnames=("num_probes", "num_iters", "num_points", "microbatch_size", "precision")
)
def spectral_density(
    loss_fn: Callable[..., jax.Array],
    params: PyTree,
    *args,
    key: jax.Array,
    num_probes: int = 8,
    num_iters: int = 60,
    num_points: int = 512,
    sigma: float | None = None,
    grid: jax.Array | None = None,
    microbatch_size: int | None = None,
    precision: str | None = "highest",
) -> SpectralDensity:
    """SLQ density of the Hessian of ``loss_fn(params, *args)`` (see :func:`slq`).

    ``microbatch_size`` and ``precision`` as in :func:`dynamics.curvature.top_eigenpairs`.
    """
    with jax.default_matmul_precision(precision):

        def matvec(v):
            return microbatch_mean(lambda b: hvp(loss_fn, params, v, *b), args, microbatch_size)

        return slq(
            matvec,
            params,
            key=key,
            num_probes=num_probes,
            num_iters=num_iters,
            num_points=num_points,
            sigma=sigma,
            grid=grid,
        )
