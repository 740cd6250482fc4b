"""Batch sharpness, directional sharpness and the trace condition against dense float64 Hessians."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynamics import curvature
from dynamics.curvature.trace import _rademacher_basis


def _split(data, num, size):
    return jax.tree.map(lambda a: a[: num * size].reshape(num, size, *a.shape[1:]), data)


def _gradient_curvature_dense(problem, params, batch):
    saved, problem.data = problem.data, batch
    try:
        h = problem.dense_hessian_at(params)
    finally:
        problem.data = saved
    g = problem.ravel(jax.grad(problem.loss_fn)(params, jax.tree.map(jnp.asarray, batch)))
    return g @ h @ g / (g @ g)


def test_batch_sharpness_is_the_mean_of_minibatch_rayleigh_quotients(mlp):
    with jax.enable_x64(True):
        params, data = mlp.jax_params(), mlp.jax_data()
        batches = _split(data, 4, 8)
        est = curvature.batch_sharpness(mlp.loss_fn, params, batches)
        ratios = [
            _gradient_curvature_dense(
                mlp, params, jax.tree.map(lambda a: np.asarray(a[i]), batches)
            )
            for i in range(4)
        ]
    np.testing.assert_allclose(np.asarray(est.samples), ratios, rtol=1e-10)
    assert float(est.estimate) == pytest.approx(np.mean(ratios), rel=1e-10)
    assert float(est.stderr) == pytest.approx(np.std(ratios, ddof=1) / 2, rel=1e-8)
    # The expectation is outside the ratio: it differs from E[g^T H g] / E[|g|^2].
    assert len(set(np.round(ratios, 6))) == 4


def test_full_batch_batch_sharpness_is_at_most_lambda_max(mlp):
    with jax.enable_x64(True):
        params, data = mlp.jax_params(), mlp.jax_data()
        est = curvature.batch_sharpness(mlp.loss_fn, params, jax.tree.map(lambda a: a[None], data))
        h = mlp.dense_hessian()
        g = mlp.ravel(jax.grad(mlp.loss_fn)(params, data))
    assert float(est.stderr) == 0.0
    assert float(est.estimate) == pytest.approx(g @ h @ g / (g @ g), rel=1e-10)
    assert float(est.estimate) <= np.linalg.eigvalsh(h)[-1]


def test_directional_sharpness_with_microbatches_matches_dense(mlp):
    with jax.enable_x64(True):
        params, data = mlp.jax_params(), mlp.jax_data()
        d = curvature.tree.normal_like(jax.random.key(3), params)
        h = mlp.dense_hessian()
        v = mlp.ravel(d)
        expected = v @ h @ v / (v @ v)
        whole = curvature.directional_sharpness(mlp.loss_fn, params, d, data)
        micro = curvature.directional_sharpness(mlp.loss_fn, params, d, data, microbatch_size=5)
        curv = curvature.directional_curvature(mlp.loss_fn, params, d, data)
    assert float(whole) == pytest.approx(expected, rel=1e-10)
    assert float(micro) == pytest.approx(expected, rel=1e-10)
    assert float(curv) == pytest.approx(v @ h @ v, rel=1e-10)


def test_trace_condition_equals_dense_forms_of_the_same_probes(mlp):
    key = jax.random.key(5)
    with jax.enable_x64(True):
        params, data = mlp.jax_params(), mlp.jax_data()
        c = curvature.trace_condition(mlp.loss_fn, params, data, key=key, num_probes=8)
        z = np.stack(
            [
                mlp.ravel(jax.tree.map(lambda a: a[i], _rademacher_basis(key, params, 8)))
                for i in range(8)
            ]
        )
        h = mlp.dense_hessian()
    quad = np.einsum("pi,ij,pj->p", z, h, z)
    squares = np.sum((z @ h) ** 2, axis=1)
    assert float(c.trace) == pytest.approx(quad.mean(), rel=1e-10)
    assert float(c.trace_stderr) == pytest.approx(quad.std(ddof=1) / np.sqrt(8), rel=1e-8)
    assert float(c.frobenius) == pytest.approx(np.sqrt(squares.mean()), rel=1e-10)
    # and, many probes later, the estimates approach the dense tr(H) and ||H||_F
    with jax.enable_x64(True):
        many = curvature.trace_condition(mlp.loss_fn, params, data, key=key, num_probes=400)
    assert abs(float(many.trace) - np.trace(h)) < 4 * float(many.trace_stderr)
    assert abs(float(many.frobenius) - np.linalg.norm(h)) < 4 * float(many.frobenius_stderr)


def test_sgd_thresholds():
    assert curvature.sgd_trace_threshold(0.1) == pytest.approx(20.0)
    assert curvature.sgd_frobenius_threshold(0.1, 16) == pytest.approx(40.0)


def test_batch_sharpness_of_a_quadratic_in_closed_form():
    # L_B(w) = 0.5 mean_i a_i w^2 per coordinate: H_B = diag(mean a), g_B = H_B w.
    a = np.array([[[1.0, 2.0], [3.0, 2.0]], [[5.0, 1.0], [1.0, 1.0]]])
    w = np.array([1.0, -2.0])
    loss = lambda p, b: 0.5 * jnp.sum(jnp.mean(b["a"], axis=0) * p**2)  # noqa: E731
    with jax.enable_x64(True):
        est = curvature.batch_sharpness(loss, jnp.asarray(w), {"a": jnp.asarray(a)})
    hs = a.mean(axis=1)
    expected = np.mean([np.sum(h**3 * w**2) / np.sum(h**2 * w**2) for h in hs])
    assert float(est.estimate) == pytest.approx(expected, rel=1e-12)
