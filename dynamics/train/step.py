"""The jitted training step, and many steps per call between two host events.

One step at parameters ``w_t`` with the minibatch ``B_t`` (a pure function of ``(seed, t)``):

    L(w_t) = mean_{i in B_t} loss(f(w_t, x_i), y_i),   g_t = grad L(w_t),
    u_t, s_{t+1} = tx.update(g_t, s_t, w_t, grad_fn=grad L, loss=L(w_t)),   w_{t+1} = w_t + u_t.

``grad_fn`` is the gradient of the *same* minibatch's mean loss at other parameters, the extra
argument SAM-like transforms use (``docs/design.md``). The minibatch is gathered inside the jit
from the device-resident training set and constrained to the ``data`` sharding, so nothing
crosses the host per step.

:func:`make_multi_step` runs a dynamic number of steps in one ``lax.while_loop`` (one compilation
for every chunk length) and returns the metrics of the last step with the first step whose loss
was not finite; it stops early there, so a diverged run does not compute NaNs to the next event.

The metrics of a step are recorded under the step count *after* the update, ``t + 1``:
``loss`` and ``accuracy`` are those of the minibatch at ``w_t``, ``grad_norm = ||g_t||``,
``update_norm = ||u_t||``, ``param_norm = ||w_{t+1}||`` and ``learning_rate`` the schedule at
``t`` (global L2 norms over the whole parameter tree).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from dynamics.data.batching import batch_indices
from dynamics.train.state import TrainState


def make_loss_fn(apply_fn: Callable, per_example_loss: Callable) -> Callable:
    """``loss_fn(params, batch) -> scalar``: the mean per-example loss over ``batch``."""

    def loss_fn(params, batch):
        return jnp.mean(per_example_loss(apply_fn(params, batch["x"]), batch["y"]))

    return loss_fn


def make_train_step(
    apply_fn: Callable,
    per_example_loss: Callable,
    accuracy_fn: Callable | None,
    tx: optax.GradientTransformationExtraArgs,
    learning_rate: Callable,
    num_examples: int,
    batch_size: int | None,
    batch_sharding: Any,
) -> Callable:
    """``step(state, train, data_key) -> (state, metrics)`` for one optimizer update.

    Args:
      apply_fn: ``apply(params, x) -> outputs``.
      per_example_loss: ``loss(outputs, y) -> [batch]``.
      accuracy_fn: ``accuracy(outputs, y) -> [batch]`` for classification, None for regression.
      tx: the optimizer; called with ``grad_fn=`` as extra argument.
      learning_rate: the schedule, only to log ``learning_rate``.
      num_examples: size of the training set.
      batch_size: minibatch size; None, 0 or ``>= num_examples`` means the full batch.
      batch_sharding: sharding every gathered minibatch is constrained to.
    """
    full_batch = not batch_size or batch_size >= num_examples

    def batch_loss(params, batch):
        outputs = apply_fn(params, batch["x"])
        return jnp.mean(per_example_loss(outputs, batch["y"])), outputs

    def step(state: TrainState, train: dict, data_key: jax.Array):
        if full_batch:
            batch = train
        else:
            idx = batch_indices(data_key, state.step, num_examples, batch_size)
            batch = jax.tree.map(lambda a: jnp.take(a, idx, axis=0), train)
            batch = jax.lax.with_sharding_constraint(batch, batch_sharding)

        (loss, outputs), grads = jax.value_and_grad(batch_loss, has_aux=True)(state.params, batch)

        def grad_fn(params):
            return jax.grad(lambda p: batch_loss(p, batch)[0])(params)

        updates, opt_state = tx.update(
            grads, state.opt_state, state.params, grad_fn=grad_fn, loss=loss
        )
        params = optax.apply_updates(state.params, updates)
        metrics = {
            "loss": loss,
            "grad_norm": optax.tree.norm(grads),
            "update_norm": optax.tree.norm(updates),
            "param_norm": optax.tree.norm(params),
            "learning_rate": jnp.asarray(learning_rate(state.step), loss.dtype),
        }
        if accuracy_fn is not None:
            metrics["accuracy"] = jnp.mean(accuracy_fn(outputs, batch["y"]).astype(loss.dtype))
        return TrainState(state.step + 1, params, opt_state), metrics

    return step


def make_multi_step(step: Callable) -> Callable:
    """``multi_step(state, train, data_key, num_steps) -> (state, metrics, diverged_at)``.

    Runs up to ``num_steps`` (a traced int, so one compilation serves every chunk length) and
    stops after the first step with a non-finite loss. ``metrics`` are the last step's;
    ``diverged_at`` is that step's recorded step number (``state.step`` after it), or -1.
    Jit it with ``donate_argnums=0``.
    """

    def multi_step(state, train, data_key, num_steps):
        metric_shapes = jax.eval_shape(step, state, train, data_key)[1]
        metrics = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), metric_shapes)

        def cond(carry):
            i, _, _, diverged_at = carry
            return (i < num_steps) & (diverged_at < 0)

        def body(carry):
            i, state, _, diverged_at = carry
            state, metrics = step(state, train, data_key)
            diverged_at = jnp.where(jnp.isfinite(metrics["loss"]), diverged_at, state.step)
            return i + 1, state, metrics, diverged_at

        carry = (jnp.int32(0), state, metrics, jnp.int32(-1))
        _, state, metrics, diverged_at = jax.lax.while_loop(cond, body, carry)
        return state, metrics, diverged_at

    return multi_step
