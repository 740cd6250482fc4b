"""Losses against NumPy closed forms; StableMax against a float64 NumPy port; softmax collapse."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

from dynamics.losses import LOSSES, accuracy, log_stablemax, softmax_collapse
from dynamics.registry import ConfigError

RNG = np.random.default_rng(0)
Z = (3 * RNG.standard_normal((6, 5))).astype(np.float32)
Z[0, 2] = 0.0  # the StableMax kink
Y = np.array([0, 1, 2, 3, 4, 2], np.int32)


def test_mse_half_sum_convention():
    loss = LOSSES.build("mse", {})
    onehot = np.eye(5)[Y]
    np.testing.assert_allclose(loss(Z, Y), 0.5 * ((Z - onehot) ** 2).sum(1), rtol=1e-6)
    targets = RNG.standard_normal((6, 5)).astype(np.float32)
    np.testing.assert_allclose(loss(Z, targets), 0.5 * ((Z - targets) ** 2).sum(1), rtol=1e-6)
    # A [batch] target for a single output is reshaped, not broadcast.
    np.testing.assert_allclose(
        loss(Z[:, :1], targets[:, 0]), 0.5 * (Z[:, 0] - targets[:, 0]) ** 2, rtol=1e-6
    )


def test_cross_entropy():
    loss = LOSSES.build("cross_entropy", {})
    z = Z.astype(np.float64)
    expected = logsumexp(z, axis=1) - z[np.arange(6), Y]
    np.testing.assert_allclose(loss(Z, Y), expected, rtol=1e-5)


def numpy_stablemax_ce(z, y):
    """Prieto et al.'s reference: log_stablemax in float64, then the negative log-likelihood."""
    z = z.astype(np.float64)
    s = np.where(z >= 0, z + 1, 1 / (1 - np.minimum(z, 0)))
    return -np.log(s[np.arange(len(y)), y] / s.sum(1))


def test_stablemax_in_float64_matches_numpy():
    z = Z.copy()
    z[1] = [1e4, -1e4, 0.5, -0.5, 0.0]  # large logits where fp32 would lose the small terms
    with jax.enable_x64(True):
        out = LOSSES.build("stablemax_cross_entropy", {})(jnp.asarray(z, jnp.float64), Y)
        assert out.dtype == jnp.float64
        np.testing.assert_allclose(out, numpy_stablemax_ce(z, Y), rtol=1e-12)
        # float32 logits are promoted, computed in float64, returned as float32.
        out32 = LOSSES.build("stablemax_cross_entropy", {})(jnp.asarray(z), Y)
        assert out32.dtype == jnp.float32
        np.testing.assert_allclose(out32, numpy_stablemax_ce(z, Y), rtol=1e-6)
    # Without x64 it runs in float32, still close to the float64 values.
    out = LOSSES.build("stablemax_cross_entropy", {"dtype": "float64"})(jnp.asarray(Z), Y)
    np.testing.assert_allclose(out, numpy_stablemax_ce(Z, Y), rtol=1e-5)


def test_stablemax_gradient_finite_and_matches_finite_differences():
    loss = LOSSES.build("stablemax_cross_entropy", {})
    with jax.enable_x64(True):
        z = jnp.asarray(Z, jnp.float64).at[2].set(jnp.array([-1e8, 1e8, 0.0, -3.0, 2.0]))

        def total(v):
            return jnp.sum(loss(v, Y))

        grad = np.asarray(jax.grad(total)(z))
        assert np.all(np.isfinite(grad))
        h, zn = 1e-6, np.asarray(z)
        for i, j in [(0, 0), (0, 3), (3, 1), (5, 2)]:  # away from the kink
            e = np.zeros_like(zn)
            e[i, j] = h
            fd = (numpy_stablemax_ce(zn + e, Y).sum() - numpy_stablemax_ce(zn - e, Y).sum()) / (
                2 * h
            )
            np.testing.assert_allclose(grad[i, j], fd, rtol=1e-6)
        # s is C^1 at 0 (both branches have slope 1), so the gradient is continuous there.
        left = jax.grad(total)(z.at[0, 2].set(-1e-9))[0, 2]
        right = jax.grad(total)(z.at[0, 2].set(1e-9))[0, 2]
        np.testing.assert_allclose(left, right, rtol=1e-6)


def test_accuracy():
    np.testing.assert_array_equal(accuracy(Z, Y), (Z.argmax(1) == Y).astype(np.float32))


def test_softmax_collapse_in_working_precision():
    z = jnp.array([[30.0, 0.0, -1.0], [10.0, 0.0, 0.0], [1.0, 2.0, 3.0]], jnp.float32)
    # exp(-30) = 9e-14 is below float32's half-ulp at 1 (6e-8), exp(-10) = 4.5e-5 is not.
    np.testing.assert_array_equal(softmax_collapse(z), [True, False, False])
    # At collapse a correct example has exactly zero loss, its true-class gradient p_y - 1 is
    # exactly 0 and the rest are exp(z_j - max z) ~ 1e-13 (Prieto et al. 2025).
    ce = LOSSES.build("cross_entropy", {})
    y = jnp.array([0, 0, 2])
    assert ce(z, y)[0] == 0.0 and ce(z, y)[1] > 0.0
    grad = jax.grad(lambda v: ce(v, y)[0])(z)[0]
    assert grad[0] == 0.0 and np.abs(grad).max() < 1e-12
    with jax.enable_x64(True):
        assert not softmax_collapse(jnp.asarray(z, jnp.float64))[0]  # 9e-14 > float64's 1.1e-16


def test_registry_and_errors():
    assert set(LOSSES.names()) == {"cross_entropy", "mse", "stablemax_cross_entropy"}
    with pytest.raises(ConfigError, match="loss.dtype"):
        LOSSES.build("stablemax_cross_entropy", {"dtype": "bfloat16"})
    for name in ("cross_entropy", "stablemax_cross_entropy"):
        with pytest.raises(ConfigError, match="integer class labels"):
            LOSSES.build(name, {})(Z, np.zeros((6, 1), np.float32))
    with pytest.raises(ConfigError, match="valid choices: cross_entropy, mse"):
        LOSSES.build("hinge", {}, where="loss")


def test_log_stablemax_matches_numpy_float64():
    """``log_stablemax`` is the reference's log s(z_i) - log sum_j s(z_j), rows summing to one."""
    z = np.random.default_rng(4).normal(size=(5, 7)) * 20
    s = np.where(z >= 0, z + 1, 1 / (1 - np.minimum(z, 0)))
    with jax.enable_x64(True):
        got = np.asarray(log_stablemax(jnp.asarray(z)))
    np.testing.assert_allclose(got, np.log(s / s.sum(1, keepdims=True)), rtol=1e-13)
    np.testing.assert_allclose(np.exp(got).sum(1), 1.0, rtol=1e-13)
