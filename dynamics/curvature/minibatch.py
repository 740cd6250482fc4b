"""Curvature along a direction, and the edge of stochastic stability of minibatch SGD.

The curvature of a loss L along a direction d is the Rayleigh quotient d^T H d / ||d||^2 of its
Hessian. It is computed here as a second directional derivative, d^2/dt^2 L(w + t d) at t = 0,
by forward-over-forward differentiation (``jax.jvp`` of ``jax.jvp`` of the scalar loss): no
gradient tape is stored and no Hessian-vector product is formed.

*Batch sharpness* (Andreyev & Beneventano 2024, "Edge of Stochastic Stability: Revisiting the Edge
of Stability for SGD", Definition 3) is the expected curvature of a minibatch loss L_B along its
own gradient g_B = grad L_B(w),

    BS(w) = E_B [ g_B^T H_B g_B / ||g_B||^2 ],   H_B = hess L_B(w),

the expectation over minibatches B drawn as the training batches are (same size), taken *outside*
the ratio. Under minibatch SGD with step size lr it rises and then hovers at 2/lr (the edge of
stochastic stability, EoSS), while the full-batch lambda_max settles below it, lower for smaller
batches; at full batch BS is the curvature along the full gradient, which is at most lambda_max.
:func:`batch_sharpness` averages the ratio over a stack of minibatches and reports the standard
error of the mean; each minibatch costs one gradient and one forward-over-forward pass, about
1.2-1.5 Hessian-vector products in all (``scripts/bench_curvature.py``).

:func:`directional_sharpness` is the same quotient for any direction on any data, e.g. the update
u an optimizer takes (``u^T H u / ||u||^2``): for gradient descent u = -lr g, and the loss along
the step goes down to second order only if lr g^T H g / ||g||^2 < 2.

Example:
  >>> import jax.numpy as jnp
  >>> loss = lambda w, b: 0.5 * jnp.mean(b["a"] * w**2, axis=0).sum()
  >>> batches = {"a": jnp.array([[[1.0, 3.0]], [[3.0, 1.0]]])}  # two minibatches of one example
  >>> est = batch_sharpness(loss, jnp.ones(2), batches)
  >>> round(float(est.estimate), 4)  # each: g = a, g^T diag(a) g / |g|^2 = (1 + 27) / 10
  2.8
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from dynamics.curvature import tree
from dynamics.curvature.compile import eager_cached
from dynamics.curvature.operators import microbatch_mean

PyTree = Any


class BatchSharpness(NamedTuple):
    """Attributes: ``estimate`` (the mean over minibatches of g_B^T H_B g_B / ||g_B||^2), its
    standard error ``stderr`` (0 for a single minibatch) and the per-minibatch ``samples``."""

    estimate: jax.Array
    stderr: jax.Array
    samples: jax.Array


def directional_curvature(
    loss_fn: Callable[..., jax.Array], params: PyTree, direction: PyTree, *args
) -> jax.Array:
    """d^T H d = d^2/dt^2 loss_fn(params + t d, *args) at t = 0, by forward-over-forward."""

    def slope(p):
        return jax.jvp(lambda q: loss_fn(q, *args), (p,), (direction,))[1]

    return jax.jvp(slope, (params,), (direction,))[1]


@eager_cached(static_argnames=("microbatch_size", "precision"))
def directional_sharpness(
    loss_fn: Callable[..., jax.Array],
    params: PyTree,
    direction: PyTree,
    *args,
    microbatch_size: int | None = None,
    precision: str | None = "highest",
) -> jax.Array:
    """d^T H d / ||d||^2 for the Hessian H of ``loss_fn(params, *args)`` (a mean over examples).

    With ``microbatch_size`` the numerator is accumulated over microbatches of the examples, as in
    :func:`dynamics.curvature.top_eigenpairs`.
    """
    with jax.default_matmul_precision(precision):
        curvature = microbatch_mean(
            lambda b: directional_curvature(loss_fn, params, direction, *b), args, microbatch_size
        )
    return curvature / tree.vdot(direction, direction)


def gradient_curvature(loss_fn: Callable[..., jax.Array], params: PyTree, batch: Any) -> jax.Array:
    """g^T H g / ||g||^2 of ``loss_fn(params, batch)`` along its own gradient g."""
    g = jax.grad(loss_fn)(params, batch)
    return directional_curvature(loss_fn, params, g, batch) / tree.vdot(g, g)


@eager_cached(static_argnames=("precision",))
def batch_sharpness(
    loss_fn: Callable[..., jax.Array],
    params: PyTree,
    batches: Any,
    *,
    precision: str | None = "highest",
) -> BatchSharpness:
    """Batch sharpness E_B[g_B^T H_B g_B / ||g_B||^2] over a stack of minibatches.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``, the mean loss over ``batch``.
      params: where the curvature is measured.
      batches: the minibatches stacked on a new leading axis (every leaf
        ``[num_batches, batch_size, ...]``), drawn like the training batches (same size, fresh
        draws; see ``dynamics.train.probes.minibatch``). One minibatch of the whole training set
        gives the curvature along the full-batch gradient.
      precision: matmul precision of every product.

    Returns:
      A :class:`BatchSharpness`; ``stderr`` is the sample standard deviation over sqrt(N).
    """
    with jax.default_matmul_precision(precision):
        samples = jax.lax.map(lambda b: gradient_curvature(loss_fn, params, b), batches)
    n = samples.shape[0]
    stderr = jnp.std(samples, ddof=1) / jnp.sqrt(n) if n > 1 else jnp.zeros((), samples.dtype)
    return BatchSharpness(jnp.mean(samples), stderr, samples)
