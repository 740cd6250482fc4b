"""Minibatch curvature probes: batch sharpness, update sharpness and SGD's trace condition.

* ``batch_sharpness(every, num_batches=256, batch_size=None, ...)``: the batch sharpness
  E_B[g_B^T H_B g_B / ||g_B||^2] of Andreyev & Beneventano (2024) over ``num_batches`` fresh
  minibatches of the training batch size (``batch_size`` None: ``config.data.batch_size``; full
  batch when training is full batch, then one batch is drawn), each sampled without replacement
  from the training set, as ``batch_sharpness``, ``batch_sharpness_stderr`` and
  ``batch_sharpness_threshold`` (the optimizer's linear-stability threshold, 2/lr for SGD).
* ``update_sharpness(every, ...)``: u^T H u / ||u||^2 of the update u the optimizer would take
  from a fresh minibatch of the training batch size (its state as it is now), H the Hessian of
  the probe's data (the first ``num_examples`` training examples), as ``update_sharpness``
  with the optimizer's threshold where one is known.
* ``trace_condition(every, num_probes=30, ...)``: tr(H) and ||H||_F of the probe data's Hessian,
  ``trace_condition/trace`` and ``trace_condition/frobenius`` with standard errors and the
  thresholds 2/lr (Wu & Su 2023) and sqrt(B)/lr (Wu, Wang & Su 2022, constant 1), B the
  training batch size.

Minibatches are a pure function of ``(config.seed, step)`` and the probe's name, so a resumed run
logs the same numbers; the probes keep no state.

Example (config):
  >>> import ml_collections
  >>> probes = ml_collections.ConfigDict({"batch_sharpness": {"every": 50, "num_batches": 128}})
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dynamics import curvature
from dynamics.curvature.operators import num_examples
from dynamics.registry import ConfigError
from dynamics.train.probes.base import PROBES, ProbeContext
from dynamics.train.probes.curvature import CurvatureProbe


def training_batch_size(config, num_train: int) -> int:
    """The training batch size as a number of examples (full batch: ``num_train``)."""
    b = config.data.batch_size
    return num_train if not b or b >= num_train else int(b)


def fresh_minibatches(key: jax.Array, data, num_batches: int, batch_size: int):
    """``num_batches`` minibatches of ``batch_size`` examples, each drawn without replacement,
    stacked on a new leading axis (the whole of ``data`` once when ``batch_size`` covers it)."""
    n = num_examples(data)
    if batch_size >= n:
        return jax.tree.map(lambda a: a[None], data)
    keys = jax.random.split(key, num_batches)
    idx = jax.vmap(lambda k: jax.random.permutation(k, n)[:batch_size])(keys)
    return jax.tree.map(lambda a: jnp.take(a, idx, axis=0), data)


def _check_positive(name: str, value: int, least: int = 1) -> None:
    if not isinstance(value, int) or value < least:
        raise ConfigError(f"probe {name} must be an integer >= {least}, got {value!r}")


class BatchSharpnessProbe(CurvatureProbe):
    name = "batch_sharpness"

    def __init__(self, every, num_batches=256, batch_size=None, precision="highest"):
        super().__init__(every, precision=precision)
        _check_positive("num_batches", num_batches, 2)
        if batch_size is not None:
            _check_positive("batch_size", batch_size)
        self.num_batches, self.batch_size = num_batches, batch_size

    def setup(self, ctx: ProbeContext):
        size = self.batch_size or training_batch_size(ctx.config, num_examples(ctx.train))
        self._fn = jax.jit(
            lambda p, d, key: curvature.batch_sharpness(
                ctx.loss_fn,
                p,
                fresh_minibatches(key, d, self.num_batches, size),
                precision=self.precision,
            )
        )

    def __call__(self, ctx: ProbeContext, step, params, opt_state, probe_state):
        est = self._fn(params, ctx.train, self.key(ctx, step))
        metrics = {
            "batch_sharpness": float(est.estimate),
            "batch_sharpness_stderr": float(est.stderr),
        }
        threshold = self.sharpness_threshold(ctx, step)
        if threshold is not None:
            metrics["batch_sharpness_threshold"] = threshold
        return metrics, probe_state


def optimizer_update(ctx: ProbeContext, params, opt_state, train, key):
    """The update the optimizer takes from a fresh minibatch of the training batch size, with its
    state as it is (the state itself is not advanced); jittable."""
    size = training_batch_size(ctx.config, num_examples(train))
    batch = jax.tree.map(lambda a: a[0], fresh_minibatches(key, train, 1, size))
    loss, grads = jax.value_and_grad(ctx.loss_fn)(params, batch)
    updates, _ = ctx.tx.update(
        grads, opt_state, params, grad_fn=lambda q: jax.grad(ctx.loss_fn)(q, batch), loss=loss
    )
    return updates


class UpdateSharpness(CurvatureProbe):
    name = "update_sharpness"

    def setup(self, ctx: ProbeContext):
        def fn(p, s, train, data, key):
            updates = optimizer_update(ctx, p, s, train, key)
            return curvature.directional_sharpness(
                ctx.loss_fn, p, updates, data, **self.operator_args()
            )

        self._fn = jax.jit(fn)

    def __call__(self, ctx: ProbeContext, step, params, opt_state, probe_state):
        value = self._fn(params, opt_state, ctx.train, self.data(ctx), self.key(ctx, step))
        metrics = {"update_sharpness": float(value)}
        threshold = self.sharpness_threshold(ctx, step)
        if threshold is not None:
            metrics["update_sharpness_threshold"] = threshold
        return metrics, probe_state


class TraceConditionProbe(CurvatureProbe):
    name = "trace_condition"

    def __init__(
        self, every, num_probes=30, num_examples=None, microbatch_size=None, precision="highest"
    ):
        super().__init__(every, num_examples, microbatch_size, precision)
        _check_positive("num_probes", num_probes, 2)
        self.num_probes = num_probes

    def setup(self, ctx: ProbeContext):
        self._fn = jax.jit(
            lambda p, d, key: curvature.trace_condition(
                ctx.loss_fn, p, d, key=key, num_probes=self.num_probes, **self.operator_args()
            )
        )

    def __call__(self, ctx: ProbeContext, step, params, opt_state, probe_state):
        c = self._fn(params, self.data(ctx), self.key(ctx, step))
        lr = float(ctx.learning_rate(step))
        batch = training_batch_size(ctx.config, num_examples(ctx.train))
        return {
            "trace_condition/trace": float(c.trace),
            "trace_condition/trace_stderr": float(c.trace_stderr),
            "trace_condition/trace_threshold": curvature.sgd_trace_threshold(lr),
            "trace_condition/frobenius": float(c.frobenius),
            "trace_condition/frobenius_stderr": float(c.frobenius_stderr),
            "trace_condition/frobenius_threshold": curvature.sgd_frobenius_threshold(lr, batch),
        }, probe_state


PROBES.register("batch_sharpness", BatchSharpnessProbe)
PROBES.register("update_sharpness", UpdateSharpness)
PROBES.register("trace_condition", TraceConditionProbe)
