"""The trace condition of SGD's linear stability: tr(H) and ||H||_F from the same products.

At a global minimum of a square loss, the linearization of SGD is w <- w - lr H_B w with random
minibatch Hessians H_B; stability in the mean-square sense constrains more than lambda_max. Wu & Su
(2023, "The Implicit Regularization of Dynamical Stability in Stochastic Gradient Descent") show
that a linearly stable minimum of SGD must have tr(H) <= 2/lr, where gradient descent only needs
lambda_max <= 2/lr; Wu, Wang & Su (2022, "The alignment property of SGD noise and how it helps
select flat minima") bound the Frobenius norm, ||H||_F <= O(sqrt(B)/lr) for batch size B (the
constant is problem dependent; ``dynamics.curvature.sgd_frobenius_threshold`` reports
sqrt(B)/lr, the scale with the constant set to 1).

Both come from one set of Rademacher probes z (E[z z^T] = I): z^T H z estimates tr(H)
(Hutchinson 1989) and ||H z||^2 estimates tr(H^2) = ||H||_F^2, one Hessian-vector product per
probe for both. ||H||_F is the square root of the mean, with the delta-method standard error
se(F^2) / (2 F).

Example:
  >>> import jax, jax.numpy as jnp
  >>> loss = lambda w, b: 0.5 * jnp.sum(b["h"] * w**2)
  >>> c = trace_condition(loss, jnp.zeros(3), {"h": jnp.array([1.0, 2.0, 2.0])},
  ...                     key=jax.random.key(0), num_probes=4)
  >>> float(c.trace), float(c.frobenius)  # a diagonal H: every probe is exact
  (5.0, 3.0)
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
from dynamics.curvature.trace import _mean_and_stderr, _rademacher_basis

PyTree = Any


class TraceCondition(NamedTuple):
    """Attributes: ``trace`` tr(H) and ``trace_stderr``; ``frobenius`` ||H||_F and
    ``frobenius_stderr``."""

    trace: jax.Array
    trace_stderr: jax.Array
    frobenius: jax.Array
    frobenius_stderr: jax.Array


@eager_cached(static_argnames=("num_probes", "microbatch_size", "precision"))
def trace_condition(
    loss_fn: Callable[..., jax.Array],
    params: PyTree,
    *args,
    key: jax.Array,
    num_probes: int = 30,
    microbatch_size: int | None = None,
    precision: str | None = "highest",
) -> TraceCondition:
    """tr(H) and ||H||_F of the Hessian of ``loss_fn(params, *args)`` from ``num_probes`` (>= 2)
    Rademacher probes; ``microbatch_size`` and ``precision`` as in ``top_eigenpairs``."""
    if num_probes < 2:
        raise ValueError(
            f"trace_condition needs num_probes >= 2 for a standard error, got {num_probes}"
        )
    with jax.default_matmul_precision(precision):

        def forms(z):
            hz = microbatch_mean(lambda b: hvp(loss_fn, params, z, *b), args, microbatch_size)
            return tree.vdot(z, hz), tree.vdot(hz, hz)

        quadratic, squares = jax.lax.map(forms, _rademacher_basis(key, params, num_probes))
    trace, trace_se = _mean_and_stderr(quadratic)
    frob2, frob2_se = _mean_and_stderr(squares)
    frobenius = jnp.sqrt(jnp.maximum(frob2, 0.0))
    return TraceCondition(
        trace, trace_se, frobenius, frob2_se / (2 * jnp.maximum(frobenius, 1e-30))
    )
