"""Lanczos, top eigenpairs and power iteration against dense float64 eigendecompositions."""

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynamics import curvature
from dynamics.curvature import tree


def _angles(vectors: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Angles between matching columns, insensitive to sign."""
    cos = np.abs(np.sum(vectors * reference, axis=0)) / (
        np.linalg.norm(vectors, axis=0) * np.linalg.norm(reference, axis=0)
    )
    return np.arccos(np.clip(cos, 0.0, 1.0))


# 60 steps on 316 parameters and 120 on the transformer's 228 test convergence; 51 on the small
# MLP's 51 parameters tests the exhausted-space case.
@pytest.mark.parametrize("name,num_iters", [("mlp", 51), ("wide_mlp", 60), ("transformer", 120)])
def test_top5_against_dense(name, num_iters, request):
    problem = request.getfixturevalue(name)
    with jax.enable_x64(True):
        h = problem.dense_hessian()
        lam, u = np.linalg.eigh(h)
        top = jax.jit(
            lambda p, d: curvature.top_eigenpairs(
                problem.loss_fn, p, d, k=5, num_iters=num_iters, key=jax.random.key(1)
            )
        )(problem.jax_params(), problem.jax_data())
        values = np.asarray(top.eigenvalues)
        vectors = np.stack(
            [problem.ravel(tree.basis_get(top.eigenvectors, i)) for i in range(5)], 1
        )
    np.testing.assert_allclose(values, lam[::-1][:5], rtol=1e-6)
    assert np.all(_angles(vectors, u[:, ::-1][:, :5]) < 1e-5)
    # The reported residuals are ||H v - lambda v|| of the returned pairs.
    dense_residuals = np.linalg.norm(h @ vectors - vectors * values, axis=0)
    np.testing.assert_allclose(np.asarray(top.residuals), dense_residuals, rtol=1e-3, atol=1e-12)


def test_inexact_pairs_report_their_residuals(mlp):
    with jax.enable_x64(True):
        h = mlp.dense_hessian()
        top = curvature.top_eigenpairs(
            mlp.loss_fn, mlp.jax_params(), mlp.jax_data(), k=3, num_iters=6, key=jax.random.key(0)
        )
        vectors = np.stack([mlp.ravel(tree.basis_get(top.eigenvectors, i)) for i in range(3)], 1)
    values = np.asarray(top.eigenvalues)
    dense_residuals = np.linalg.norm(h @ vectors - vectors * values, axis=0)
    # Six steps cannot resolve the top three: the residuals are large and reported as they are.
    assert dense_residuals.max() > 1e-3
    np.testing.assert_allclose(np.asarray(top.residuals), dense_residuals, rtol=1e-8)


def test_smallest_eigenvalues_are_negative(mlp):
    with jax.enable_x64(True):
        lam = np.linalg.eigvalsh(mlp.dense_hessian())
        bottom = curvature.top_eigenpairs(
            mlp.loss_fn,
            mlp.jax_params(),
            mlp.jax_data(),
            k=3,
            num_iters=51,
            which="SA",
            key=jax.random.key(0),
        )
    assert lam[0] < 0
    np.testing.assert_allclose(np.asarray(bottom.eigenvalues), lam[:3], rtol=1e-6)


def _operator(seed=0):
    """A symmetric 60 x 60 operator on a two-leaf pytree with a tight cluster at the top and
    negative eigenvalues of larger magnitude."""
    rng = np.random.default_rng(seed)
    spectrum = np.concatenate([[10.0, 10.0 - 1e-3, 10.0 - 2e-3, 9.0], rng.uniform(-30.0, 5.0, 56)])
    q, _ = np.linalg.qr(rng.normal(size=(60, 60)))
    a = (q * spectrum) @ q.T
    like = {"a": np.zeros(40), "b": np.zeros((4, 5))}

    def matvec(v):
        flat = jnp.concatenate([v["a"], v["b"].reshape(-1)])
        out = jnp.asarray(a) @ flat
        return {"a": out[:40], "b": out[40:].reshape(4, 5)}

    return a, spectrum, like, matvec


def test_clustered_top_eigenvalues_on_a_pytree():
    a, spectrum, like, matvec = _operator()
    with jax.enable_x64(True):
        pairs = curvature.eigsh(
            matvec, jax.tree.map(jnp.asarray, like), k=4, num_iters=45, key=jax.random.key(3)
        )
        magnitude = curvature.eigsh(
            matvec,
            jax.tree.map(jnp.asarray, like),
            k=1,
            num_iters=45,
            which="LM",
            key=jax.random.key(3),
        )
    np.testing.assert_allclose(
        np.asarray(pairs.eigenvalues), np.sort(spectrum)[::-1][:4], rtol=1e-9
    )
    assert float(magnitude.eigenvalues[0]) == pytest.approx(spectrum[np.argmax(np.abs(spectrum))])


def test_warm_start_from_exact_eigenvectors_converges_in_few_steps():
    a, spectrum, like, matvec = _operator()
    lam, u = np.linalg.eigh(a)
    with jax.enable_x64(True):
        like = jax.tree.map(jnp.asarray, like)
        init = jax.vmap(lambda x: {"a": x[:40], "b": x[40:].reshape(4, 5)})(
            jnp.asarray(u[:, ::-1][:, :4].T)
        )
        warm = curvature.eigsh(matvec, like, k=4, num_iters=6, key=jax.random.key(0), init=init)
        cold = curvature.eigsh(matvec, like, k=4, num_iters=6, key=jax.random.key(0))
    exact = lam[::-1][:4]
    assert np.max(np.abs(np.asarray(warm.eigenvalues) - exact) / exact) < 1e-6
    assert np.max(np.abs(np.asarray(cold.eigenvalues) - exact) / exact) > 1e-3


def test_lanczos_basis_is_orthonormal_and_tridiagonalizes(mlp):
    with jax.enable_x64(True):
        params, data = mlp.jax_params(), mlp.jax_data()
        h = mlp.dense_hessian()
        result = curvature.lanczos(
            lambda v: curvature.hvp(mlp.loss_fn, params, v, data),
            tree.normal_like(jax.random.key(0), params),
            40,
        )
        q = np.stack([mlp.ravel(tree.basis_get(result.basis, i)) for i in range(40)])
        t = np.asarray(curvature.tridiagonal(result.alphas, result.betas))
    np.testing.assert_allclose(q @ q.T, np.eye(40), atol=1e-12)
    np.testing.assert_allclose(q @ h @ q.T, t, atol=1e-10)


def test_float32_bases_stay_orthonormal_after_ritz_values_converge():
    # Ten fast-converging top eigenvalues: without reorthogonalization the float32 basis loses
    # orthogonality completely (measured 0.95 here), with it it stays at rounding level.
    rng = np.random.default_rng(0)
    n, m = 300, 100
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    lam = np.concatenate([100.0 * 0.7 ** np.arange(10), rng.uniform(-1.0, 1.0, n - 10)])
    a = (q * lam) @ q.T
    matvec = lambda v: jnp.asarray(a, jnp.float32) @ v  # noqa: E731
    plain = curvature.lanczos(matvec, jnp.asarray(rng.normal(size=n), jnp.float32), m)
    h, block, _ = curvature.seeded_rayleigh_ritz(
        matvec, jnp.asarray(rng.normal(size=(5, n)), jnp.float32), m
    )
    for basis in (plain.basis, block):
        basis = np.asarray(basis, np.float64)
        assert np.abs(basis @ basis.T - np.eye(m)).max() < 2e-6
    block = np.asarray(block, np.float64)
    np.testing.assert_allclose(np.asarray(h), block @ a @ block.T, atol=1e-4)


def test_exhausted_krylov_space_gives_no_spurious_ritz_values():
    # 8 iterations in a 5-dimensional space: the last rows are empty, not eigenvalue 0.
    a = np.diag([-1.0, -2.0, -3.0, -4.0, -5.0])
    with jax.enable_x64(True):
        pairs = curvature.eigsh(
            lambda v: jnp.asarray(a) @ v, jnp.zeros(5), k=5, num_iters=8, key=jax.random.key(0)
        )
    np.testing.assert_allclose(np.asarray(pairs.eigenvalues), [-1, -2, -3, -4, -5], rtol=1e-12)


def test_power_iteration_needs_more_products_than_lanczos():
    # |lambda_2 / lambda_1| = 0.9: power iteration's Rayleigh quotient converges like 0.81^t.
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(60, 60)))
    a = (q * np.concatenate([[10.0], np.linspace(-9.0, 9.0, 59)])) @ q.T
    with jax.enable_x64(True):
        matvec = lambda v: jnp.asarray(a) @ v  # noqa: E731
        power = curvature.power_iteration(matvec, jnp.asarray(rng.normal(size=60)), 300)
        lanczos = curvature.eigsh(matvec, jnp.zeros(60), k=1, num_iters=30, key=jax.random.key(0))
    assert float(power.eigenvalue) == pytest.approx(10.0, rel=1e-9)
    assert float(power.residual) < 1e-6
    assert float(lanczos.eigenvalues[0]) == pytest.approx(10.0, rel=1e-7)
    # After the same 30 products, power iteration is still far off.
    assert abs(float(power.history[29]) - 10.0) / 10.0 > 1e-4


def test_lanczos_compiles_in_under_10_seconds(mlp):
    params = jax.tree.map(lambda p: jnp.asarray(p, jnp.float32), mlp.params)
    data = {"x": jnp.asarray(mlp.data["x"], jnp.float32), "y": jnp.asarray(mlp.data["y"])}
    fn = jax.jit(
        lambda p, d: curvature.top_eigenpairs(
            mlp.loss_fn, p, d, k=2, num_iters=30, key=jax.random.key(0), microbatch_size=8
        )
    )
    # CPU time of this process, not wall time: CI machines run several test processes at once.
    # The persistent compilation cache the test session shares (conftest) would time a load.
    cache = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    try:
        start = time.process_time()
        compiled = fn.lower(params, data).compile()
        elapsed = time.process_time() - start
    finally:
        jax.config.update("jax_enable_compilation_cache", cache)
    assert elapsed < 10.0, elapsed
    assert np.isfinite(np.asarray(compiled(params, data).eigenvalues)).all()
