"""Trace estimators and stochastic Lanczos quadrature against the exact spectrum."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynamics import curvature
from dynamics.curvature import tree


@pytest.fixture(scope="module")
def spectrum(mlp):
    with jax.enable_x64(True):
        h = mlp.dense_hessian()
    return h, np.linalg.eigvalsh(h)


@pytest.mark.parametrize("method", ["hutchinson", "hutch++"])
def test_trace_within_three_standard_errors(mlp, spectrum, method):
    h, lam = spectrum
    with jax.enable_x64(True):
        est = curvature.hessian_trace(
            mlp.loss_fn,
            mlp.jax_params(),
            mlp.jax_data(),
            key=jax.random.key(0),
            num_probes=30,
            method=method,
        )
    exact = np.trace(h)
    assert float(est.stderr) > 0
    assert abs(float(est.estimate) - exact) < 3 * float(est.stderr)
    if method == "hutchinson":
        # Each sample is z^T H z for the Rademacher probe z, whose variance is known in closed form.
        predicted_std = np.sqrt(2 * (np.sum(h**2) - np.sum(np.diag(h) ** 2)))
        assert float(est.stderr) * np.sqrt(30) == pytest.approx(predicted_std, rel=0.35)


def test_hutch_plus_plus_is_exact_for_low_rank():
    # Rank 4 and 4 sketch vectors: the deflated remainder is zero, so are error and stderr.
    rng = np.random.default_rng(0)
    u = rng.normal(size=(50, 4))
    a = u @ np.diag([5.0, 3.0, -2.0, 1.0]) @ u.T
    with jax.enable_x64(True):
        est = curvature.hutch_plus_plus(
            lambda v: jnp.asarray(a) @ v, jnp.zeros(50), jax.random.key(0), 12
        )
    assert float(est.estimate) == pytest.approx(np.trace(a), rel=1e-10)
    assert float(est.stderr) < 1e-8 * abs(np.trace(a))


def test_quadrature_integrates_polynomials_exactly(mlp, spectrum):
    h, _ = spectrum
    with jax.enable_x64(True):
        params, data = mlp.jax_params(), mlp.jax_data()
        v = tree.normal_like(jax.random.key(5), params)
        nodes, weights = curvature.lanczos_quadrature(
            lambda u: curvature.hvp(mlp.loss_fn, params, u, data), v, 10
        )
    x = mlp.ravel(v) / np.linalg.norm(mlp.ravel(v))
    nodes, weights = np.asarray(nodes), np.asarray(weights)
    for p in range(8):  # degree <= 2 m - 1 = 19 is exact; the first few moments are checked
        exact = x @ np.linalg.matrix_power(h, p) @ x
        assert np.sum(weights * nodes**p) == pytest.approx(exact, rel=1e-9, abs=1e-12)


def test_spectral_density_moments(mlp, spectrum):
    _, lam = spectrum
    with jax.enable_x64(True):
        d = curvature.spectral_density(
            mlp.loss_fn,
            mlp.jax_params(),
            mlp.jax_data(),
            key=jax.random.key(0),
            num_probes=16,
            num_iters=20,
            num_points=400,
        )
    nodes, weights = np.asarray(d.nodes), np.asarray(d.weights)
    np.testing.assert_allclose(weights.sum(1), 1.0, rtol=1e-10)
    for p in (1, 2):
        per_probe = np.sum(weights * nodes**p, axis=1)
        stderr = per_probe.std(ddof=1) / np.sqrt(len(per_probe))
        assert abs(per_probe.mean() - np.mean(lam**p)) < 3 * stderr
    # The smoothed curve is a probability density whose mean is the first moment.
    grid, density = np.asarray(d.grid), np.asarray(d.density)
    dx = grid[1] - grid[0]
    assert np.sum(density) * dx == pytest.approx(1.0, abs=1e-3)
    assert np.sum(grid * density) * dx == pytest.approx(
        np.mean(np.sum(weights * nodes, axis=1)), rel=1e-3
    )
    # Extreme Ritz values converge first: the support reaches the true extremes.
    assert nodes.max() == pytest.approx(lam.max(), rel=1e-6)
    assert nodes.min() == pytest.approx(lam.min(), rel=1e-6)
