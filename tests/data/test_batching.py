"""Minibatches as a pure function of (key, step): determinism, epoch coverage, resuming."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynamics.data.batching import batch_indices, get_batch, steps_per_epoch

KEY = jax.random.key(42)


@pytest.fixture(scope="module")
def jitted():
    return jax.jit(batch_indices, static_argnums=(2, 3))


def test_each_example_once_per_epoch_in_a_fresh_order(jitted):
    n, bs = 12, 4
    assert steps_per_epoch(n, bs) == 3
    epochs = [np.concatenate([jitted(KEY, e * 3 + i, n, bs) for i in range(3)]) for e in range(3)]
    for order in epochs:
        np.testing.assert_array_equal(np.sort(order), np.arange(n))
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])


def test_remainder_is_dropped_and_batches_are_disjoint_within_an_epoch(jitted):
    n, bs = 10, 3
    batches = [np.asarray(jitted(KEY, i, n, bs)) for i in range(steps_per_epoch(n, bs))]
    seen = np.concatenate(batches)
    assert len(seen) == 9 and len(set(seen.tolist())) == 9 and seen.max() < n
    assert all(b.shape == (3,) and b.dtype == np.int32 for b in batches)


def test_pure_function_of_key_and_step_so_resume_is_exact(jitted):
    n, bs = 50, 8

    def body(_, step):
        return None, batch_indices(KEY, step, n, bs)

    # Uninterrupted: 20 steps inside one lax.scan (the step is traced).
    uninterrupted = np.asarray(jax.lax.scan(body, None, jnp.arange(20))[1])
    # Resumed: a fresh loop restored at step 11 only knows the step counter.
    resumed = np.stack([jitted(KEY, step, n, bs) for step in range(11, 20)])
    np.testing.assert_array_equal(uninterrupted[11:], resumed)
    assert not np.array_equal(jitted(jax.random.key(1), 13, n, bs), uninterrupted[13])


@pytest.mark.parametrize("bs", [0, None, 7, 100])
def test_full_batch(bs):
    np.testing.assert_array_equal(batch_indices(KEY, 5, 7, bs), np.arange(7))
    assert steps_per_epoch(7, bs) == 1


def test_get_batch_gathers_every_array():
    data = {"x": np.arange(20.0).reshape(10, 2), "y": np.arange(10)}
    batch = get_batch(data, jnp.array([3, 0]))
    np.testing.assert_array_equal(batch["x"], [[6.0, 7.0], [0.0, 1.0]])
    np.testing.assert_array_equal(batch["y"], [3, 0])
