"""Stochastic trace estimators: Hutchinson and Hutch++, with standard errors.

Hutchinson (1989): for Rademacher z (E[z z^T] = I), E[z^T A z] = tr(A) with variance
2 (||A||_F^2 - sum_i A_ii^2); the estimate is the mean over N probes and its standard error the
sample standard deviation over sqrt(N).

Hutch++ (Meyer, Musco, Musco & Woodruff 2021): spend N/3 products on A S (S Rademacher, N/3
columns), orthonormalize to Q, take tr(Q^T A Q) exactly (N/3 products) and estimate the rest with
Hutchinson on (I - Q Q^T) A (I - Q Q^T) (N/3 products). The top of the spectrum, which dominates
the variance of plain Hutchinson for the heavy-tailed spectra of neural networks, is then counted
exactly: error O(1/N) instead of O(1/sqrt(N)). The standard error is that of the Hutchinson part.

Example:
  >>> import jax, jax.numpy as jnp
  >>> a = jnp.diag(jnp.arange(1.0, 5.0))
  >>> est = hutchinson(lambda v: a @ v, jnp.ones(4), jax.random.key(0), 8)
  >>> float(est.estimate)  # diagonal A: every Rademacher probe gives the exact trace
  10.0
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from dynamics.curvature import tree
from dynamics.curvature.compile import eager_cached
from dynamics.curvature.hvp import hvp
from dynamics.curvature.operators import microbatch_mean

PyTree = Any
Matvec = Callable[[PyTree], PyTree]


class TraceEstimate(NamedTuple):
    """Attributes: estimate of tr(A), its standard error, and the per-probe ``samples``."""

    estimate: jax.Array
    stderr: jax.Array
    samples: jax.Array


def _quadratic_forms(matvec: Matvec, probes: PyTree) -> jax.Array:
    return jax.lax.map(lambda z: tree.vdot(z, matvec(z)), probes)


def _rademacher_basis(key: jax.Array, like: PyTree, n: int) -> PyTree:
    return jax.vmap(lambda k: tree.rademacher_like(k, like))(jax.random.split(key, n))


def _mean_and_stderr(samples: jax.Array) -> tuple[jax.Array, jax.Array]:
    n = samples.shape[0]
    return jnp.mean(samples), jnp.std(samples, ddof=1) / jnp.sqrt(n)


def hutchinson(matvec: Matvec, like: PyTree, key: jax.Array, num_probes: int) -> TraceEstimate:
    """Hutchinson's estimate of tr(A) from ``num_probes`` Rademacher probes (>= 2)."""
    samples = _quadratic_forms(matvec, _rademacher_basis(key, like, num_probes))
    return TraceEstimate(*_mean_and_stderr(samples), samples)


def hutch_plus_plus(matvec: Matvec, like: PyTree, key: jax.Array, num_probes: int) -> TraceEstimate:
    """Hutch++ with ``num_probes`` products in all (a multiple of 3, at least 6)."""
    if num_probes % 3 or num_probes < 6:
        raise ValueError(f"Hutch++ needs a multiple of 3 products, at least 6; got {num_probes}")
    r = num_probes // 3
    sketch_key, probe_key = jax.random.split(key)
    sketch = jax.lax.map(matvec, _rademacher_basis(sketch_key, like, r))
    q = tree.orthonormalize(sketch)
    top = jnp.sum(_quadratic_forms(matvec, q))

    def deflate(v):
        return tree.sub(v, tree.basis_combine(q, tree.basis_dot(q, v)))

    samples = _quadratic_forms(
        lambda v: deflate(matvec(v)), jax.vmap(deflate)(_rademacher_basis(probe_key, like, r))
    )
    mean, stderr = _mean_and_stderr(samples)
    return TraceEstimate(top + mean, stderr, samples)


ESTIMATORS = {"hutchinson": hutchinson, "hutch++": hutch_plus_plus}


def estimator(method: str) -> Callable[..., TraceEstimate]:
    """The estimator named ``method`` (``ValueError`` naming the valid choices otherwise)."""
    if method not in ESTIMATORS:
        raise ValueError(f"method must be one of {sorted(ESTIMATORS)}, got {method!r}")
    return ESTIMATORS[method]


@eager_cached(static_argnames=("num_probes", "method", "microbatch_size", "precision"))
def hessian_trace(
    loss_fn: Callable[..., jax.Array],
    params: PyTree,
    *args,
    key: jax.Array,
    num_probes: int = 30,
    method: str = "hutch++",
    microbatch_size: int | None = None,
    precision: str | None = "highest",
) -> TraceEstimate:
    """tr(H) of the Hessian of ``loss_fn(params, *args)`` by ``"hutchinson"`` or ``"hutch++"``.

    ``microbatch_size`` and ``precision`` as in :func:`dynamics.curvature.top_eigenpairs`.
    """
    trace_estimator = estimator(method)
    with jax.default_matmul_precision(precision):

        def matvec(v):
            return microbatch_mean(lambda b: hvp(loss_fn, params, v, *b), args, microbatch_size)

        return trace_estimator(matvec, params, key, num_probes)
