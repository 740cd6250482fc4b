"""Grokking diagnostics of Prieto et al. (2025), "Grokking at the edge of numerical stability".

``grokking(every)`` logs, on the whole training set:

* ``softmax_collapse``: the fraction of examples whose softmax is exactly one-hot in the working
  precision, i.e. ``sum_j exp(z_j - max z) == 1`` (every other term underflows or rounds away);
  their cross-entropy and gradient are then exactly zero (softmax collapse, SC);
* ``zero_loss_fraction``: the fraction of examples whose loss is exactly ``0``;
* ``grad_weight_cosine``: ``cos(grad L, w)`` over all parameters; close to ``-1`` the gradient
  only rescales the weights (naive loss minimization, NLM: the logits grow, the predictions stay);
* ``weight_norm``: ``||w||`` over all parameters;
* ``max_logit``: ``max |z|`` over the training set (large logits precede SC).

Train/test accuracy and loss come from the ``evaluation`` probe.

Example (config):
  >>> import ml_collections
  >>> probes = ml_collections.ConfigDict({"grokking": {"every": 100}})
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dynamics.train.probes.base import PROBES, Probe, ProbeContext


def softmax_collapse_fraction(logits: jax.Array) -> jax.Array:
    """Fraction of rows with ``sum(exp(z - max z)) == 1`` in the logits' own precision."""
    shifted = logits - jnp.max(logits, axis=-1, keepdims=True)
    return jnp.mean(jnp.sum(jnp.exp(shifted), axis=-1) == 1.0)


def _flat_dot(a, b) -> jax.Array:
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


class Grokking(Probe):
    """Softmax collapse, zero-loss fraction, gradient-weight cosine, weight norm, max logit."""

    name = "grokking"

    def __init__(self, every: int):
        super().__init__(every)
        self._measure = None

    def setup(self, ctx: ProbeContext):
        def measure(params, batch):
            logits = ctx.apply_fn(params, batch["x"])
            losses = ctx.per_example_loss(logits, batch["y"])
            grads = jax.grad(ctx.loss_fn)(params, batch)
            w_norm = jnp.sqrt(_flat_dot(params, params))
            g_norm = jnp.sqrt(_flat_dot(grads, grads))
            cosine = _flat_dot(grads, params) / (w_norm * g_norm + 1e-30)
            return {
                "softmax_collapse": softmax_collapse_fraction(logits),
                "zero_loss_fraction": jnp.mean(losses == 0.0),
                "grad_weight_cosine": cosine,
                "weight_norm": w_norm,
                "max_logit": jnp.max(jnp.abs(logits)),
            }

        self._measure = jax.jit(measure)

    def __call__(self, ctx, step, params, opt_state, probe_state):
        return self._measure(params, ctx.train), probe_state


@PROBES.register(Grokking.name)
def grokking(every: int) -> Grokking:
    return Grokking(every)
