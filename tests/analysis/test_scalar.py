"""GFS sharpness of scalar networks against independent float64 references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp
from scipy.optimize import brentq

from dynamics.analysis import scalar


def _numpy_shift(w, y, x):
    """The paper's equation prod_i (w_i^2 + c) = (y/x)^2 solved by Brent's method."""
    sq = np.asarray(w, np.float64) ** 2

    def f(c):
        return np.sum(np.log(sq + c)) - 2 * np.log(abs(y / x))

    lo = -sq.min() * (1 - 1e-15)
    hi = 1.0
    while f(hi) < 0:
        hi *= 2
    return brentq(f, lo, hi, xtol=1e-300, rtol=1e-15, maxiter=500)


@jax.jit
def _top_hessian_eigenvalue(w, y, x):
    """Dense reference: the largest eigenvalue of the (tiny) Hessian of the loss."""
    return jnp.linalg.eigvalsh(jax.hessian(scalar.loss)(w, y, x))[-1]


CASES = [
    (np.array([1.3, 0.9]), 2.0, 1.0),  # product below y: c > 0
    (np.array([2.0, 1.5, 1.2, 0.7]), 0.8, 1.0),  # product above y: c < 0
    (np.array([1.1, -0.4, 0.9]), 1.5, 0.7),  # wrong sign: the smallest weight must flip
    (np.array([0.05, 3.0, 2.0, 1.0, 1.5, 0.9, 1.2, 1.1]), 1.0, 2.0),  # near -min w^2
]


@pytest.mark.parametrize("w,y,x", CASES)
def test_shift_matches_brent(w, y, x):
    with jax.enable_x64(True):
        c = float(scalar.gfs_shift(jnp.asarray(w), y, x))
    np.testing.assert_allclose(c, _numpy_shift(w, y, x), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("w,y,x", CASES[:3])
def test_gfs_matches_integrated_gradient_flow_and_dense_hessian(w, y, x):
    """solve_ivp (scipy, float64) reaches the closed-form GFS; eigh of its Hessian is S(w)."""

    def rhs(_, v):
        out = x * np.prod(v) - y
        return -np.array([out * x * np.prod(np.delete(v, i)) for i in range(v.size)])

    sol = solve_ivp(rhs, (0.0, 400.0), w, method="DOP853", rtol=1e-12, atol=1e-14)
    w_end = sol.y[:, -1]
    with jax.enable_x64(True):
        w_star = scalar.gfs_solution(jnp.asarray(w), y, x)
        sharp = float(scalar.gfs_sharpness(jnp.asarray(w), y, x))
        top = float(_top_hessian_eigenvalue(jnp.asarray(w_end), y, x))
        rk4 = scalar.gradient_flow(jnp.asarray(w), y, x, 400.0, 160000)
    np.testing.assert_allclose(np.asarray(w_star), w_end, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(np.asarray(rk4), w_end, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(sharp, top, rtol=1e-7)


def test_gradient_matches_autodiff_with_zero_weight():
    with jax.enable_x64(True):
        w = jnp.array([0.7, 0.0, -1.3, 2.0])
        ours = jax.jit(scalar.gradient)(w, 0.5, 1.5)
        np.testing.assert_allclose(ours, jax.jit(jax.grad(scalar.loss))(w, 0.5, 1.5), rtol=1e-14)


def test_flattest_minimum_is_balanced_and_flattest():
    """D |y|^(2-2/D) equals S at the balanced minimum and bounds S at random minima."""
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        for depth in (2, 5):
            y = 1.7
            flat = scalar.flattest_sharpness(depth, y)
            balanced = jnp.full((depth,), y ** (1 / depth))
            np.testing.assert_allclose(float(scalar.gfs_sharpness(balanced, y)), flat, rtol=1e-13)
            top = float(_top_hessian_eigenvalue(balanced, y, 1.0))
            np.testing.assert_allclose(top, flat, rtol=1e-12)
            others = jnp.asarray(rng.uniform(0.3, 2.0, (16, depth)))
            sharp = jax.vmap(lambda w: scalar.gfs_sharpness(w, y))(others)
            assert bool(jnp.all(sharp >= flat * (1 - 1e-12)))


def test_gd_decreases_gfs_sharpness_inside_assumptions(depth=3):
    """Kreisler et al. 2023: S(w_t) non-increasing; GD converges just below 2/lr.

    (Depths 2, 4 and 8 run through the runner in tests/experiments.)
    """
    with jax.enable_x64(True):
        base = jnp.linspace(1.6, 0.7, depth)
        y = float(jnp.prod(base))
        sharp_min = float(scalar.gfs_sharpness(base, y))
        lr = 2.0 / (0.5 * (sharp_min + scalar.flattest_sharpness(depth, y)))
        w0 = base * (1 + 0.01 * jnp.cos(jnp.arange(depth)))
        traj = scalar.gradient_descent(w0, y, 1.0, lr, 4000)
        summary = scalar.gfs_summary(traj["gfs_sharpness"], lr)
        w_star = jax.jit(jax.vmap(lambda w: scalar.gfs_solution(w, y)))(traj["weights"])
        np.testing.assert_allclose(
            traj["gfs_sharpness"], y**2 * np.sum(1 / np.asarray(w_star) ** 2, axis=1), rtol=1e-12
        )
    assert summary["gfs_sharpness_initial"] > summary["gfs_threshold"]
    assert summary["gfs_max_relative_increase"] <= 1e-12
    assert 0.9 <= summary["gfs_final_over_threshold"] <= 1.0
    assert float(traj["loss"][-1]) < 1e-6


def test_sign_flip_breaks_monotonicity():
    """A first step that flips a weight's sign (outside the assumptions) raises S."""
    with jax.enable_x64(True):
        w0 = jnp.array([2.4, 2.1])
        y, lr = 1.0, 0.45
        traj = scalar.gradient_descent(w0, y, 1.0, lr, 2000)
    signs = np.sign(np.asarray(traj["weights"]))
    assert (signs[1] != signs[0]).all()
    assert 2.0 / lr > scalar.flattest_sharpness(2, y)
    summary = scalar.gfs_summary(traj["gfs_sharpness"], lr)
    assert summary["gfs_step_of_max_increase"] == 1
    assert summary["gfs_max_relative_increase"] > 0.5
    assert float(traj["loss"][-1]) < 1e-10
