"""The jitted step against a float64 NumPy re-derivation, and the grad_fn extra argument."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dynamics.data.batching import batch_indices
from dynamics.losses import LOSSES, accuracy
from dynamics.train import sharding
from dynamics.train.state import TrainState
from dynamics.train.step import make_multi_step, make_train_step

N, D, K = 24, 5, 3


def _linear(params, x):
    return x @ params["w"] + params["b"]


def _data(rng):
    return {
        "x": rng.standard_normal((N, D)),
        "y": rng.integers(0, K, size=N).astype(np.int32),
    }


def _numpy_step(w, b, x, y, lr):
    """One GD step on 0.5 * ||x w + b - onehot(y)||^2 averaged over the batch, in NumPy."""
    residual = x @ w + b - np.eye(K)[y]
    loss = 0.5 * np.mean(np.sum(residual**2, axis=1))
    gw, gb = x.T @ residual / len(x), residual.mean(0)
    correct = np.mean(np.argmax(x @ w + b, 1) == y)
    return w - lr * gw, b - lr * gb, loss, np.sqrt(np.sum(gw**2) + np.sum(gb**2)), correct


@pytest.mark.parametrize("batch_size", [None, 8])
def test_steps_match_numpy_gradient_descent(batch_size):
    rng = np.random.default_rng(0)
    data = _data(rng)
    w0, b0 = rng.standard_normal((D, K)), rng.standard_normal(K)
    lr, key = 0.1, jax.random.key(3)
    mesh = sharding.make_mesh(1, 1)
    with jax.enable_x64(True):
        tx = optax.with_extra_args_support(optax.sgd(lr))
        step = make_train_step(
            _linear, LOSSES.build("mse"), accuracy, tx, optax.constant_schedule(lr), N,
            batch_size, sharding.batch_sharding(mesh),
        )  # fmt: skip
        multi = jax.jit(make_multi_step(step), donate_argnums=0)
        params = {"w": jnp.asarray(w0), "b": jnp.asarray(b0)}
        state = TrainState(jnp.int32(0), params, tx.init(params))
        state, metrics, diverged_at = multi(state, jax.device_put(data), key, jnp.int32(4))

        w, b = w0, b0
        for t in range(4):
            idx = np.arange(N) if batch_size is None else np.asarray(batch_indices(key, t, N, 8))
            w, b, loss, grad_norm, acc = _numpy_step(w, b, data["x"][idx], data["y"][idx], lr)
    assert int(state.step) == 4 and int(diverged_at) == -1
    np.testing.assert_allclose(state.params["w"], w, rtol=1e-12)
    np.testing.assert_allclose(state.params["b"], b, rtol=1e-12)
    np.testing.assert_allclose(metrics["loss"], loss, rtol=1e-12)
    np.testing.assert_allclose(metrics["grad_norm"], grad_norm, rtol=1e-12)
    np.testing.assert_allclose(metrics["update_norm"], lr * grad_norm, rtol=1e-12)
    np.testing.assert_allclose(metrics["param_norm"], np.sqrt(np.sum(w**2) + np.sum(b**2)))
    np.testing.assert_allclose(metrics["accuracy"], acc)


def test_grad_fn_is_the_current_batch_gradient_and_divergence_stops_the_chunk():
    """A transform that steps along grad_fn(params + 1): exact for a quadratic loss."""
    rng = np.random.default_rng(1)
    data = _data(rng)
    x, y = data["x"].astype(np.float32), data["y"]

    def shifted_gradient_step(lr):
        def update(updates, state, params, *, grad_fn, **extra):
            shifted = jax.tree.map(lambda p: p + 1.0, params)
            return jax.tree.map(lambda g: -lr * g, grad_fn(shifted)), state

        return optax.GradientTransformationExtraArgs(lambda p: optax.EmptyState(), update)

    mesh = sharding.make_mesh(1, 1)
    key = jax.random.key(0)
    for lr, steps in ((0.01, 1), (1e4, 20)):
        tx = optax.with_extra_args_support(shifted_gradient_step(lr))
        step = make_train_step(
            _linear, LOSSES.build("mse"), None, tx, optax.constant_schedule(lr), N, 8,
            sharding.batch_sharding(mesh),
        )  # fmt: skip
        multi = jax.jit(make_multi_step(step), donate_argnums=0)
        params = {"w": jnp.zeros((D, K)), "b": jnp.zeros(K)}
        state = TrainState(jnp.int32(0), params, tx.init(params))
        state, metrics, diverged_at = multi(state, {"x": x, "y": y}, key, jnp.int32(steps))
        if lr == 0.01:
            idx = np.asarray(batch_indices(key, 0, N, 8))
            w, b, *_ = _numpy_step(np.ones((D, K)), np.ones(K), x[idx], y[idx], lr)
            np.testing.assert_allclose(state.params["w"], w - 1, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(state.params["b"], b - 1, rtol=1e-5, atol=1e-6)
            assert int(diverged_at) == -1
        else:
            # The loss overflows after a few steps; the chunk stops at the first non-finite one.
            assert 0 < int(diverged_at) < steps
            assert int(state.step) == int(diverged_at)
            assert not np.isfinite(metrics["loss"])


def test_loss_extra_arg_is_the_current_batch_loss():
    """The step hands tx.update the minibatch loss at w_t as ``loss=`` (flooding uses it)."""
    rng = np.random.default_rng(2)
    data = _data(rng)
    x, y = data["x"].astype(np.float32), data["y"]

    def record_loss():
        def update(updates, state, params, *, loss, **extra):
            return jax.tree.map(jnp.zeros_like, updates), loss

        return optax.GradientTransformationExtraArgs(lambda p: jnp.float32(0), update)

    tx = optax.with_extra_args_support(record_loss())
    mesh = sharding.make_mesh(1, 1)
    key = jax.random.key(3)
    step = make_train_step(
        _linear, LOSSES.build("mse"), None, tx, optax.constant_schedule(0.1), N, 8,
        sharding.batch_sharding(mesh),
    )  # fmt: skip
    params = {"w": jnp.asarray(rng.normal(size=(D, K)), jnp.float32), "b": jnp.zeros(K)}
    state = TrainState(jnp.int32(0), params, tx.init(params))
    state, _, _ = jax.jit(make_multi_step(step))(state, {"x": x, "y": y}, key, jnp.int32(1))
    idx = np.asarray(batch_indices(key, 0, N, 8))
    f = x[idx] @ np.asarray(params["w"], np.float64)
    expected = 0.5 * np.mean(np.sum((f - np.eye(K)[y[idx]]) ** 2, axis=1))
    np.testing.assert_allclose(float(state.opt_state), expected, rtol=1e-5)
