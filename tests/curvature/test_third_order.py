"""Third-order curvature against central differences of dense float64 Hessians and a quartic."""

import jax
import jax.numpy as jnp
import numpy as np
from curvature_problems import make_mlp
from jax.flatten_util import ravel_pytree

from dynamics.curvature import (
    curvature_gradients,
    progressive_sharpening,
    self_stabilization,
    sharpness_gradient,
)


def _dense_hessians(problem, h=1e-5):
    """H(w + h e_m) and H(w - h e_m) for every coordinate m: ``[2, n, n, n]`` (one compilation)."""
    flat, unravel = ravel_pytree(problem.jax_params())
    data = problem.jax_data()
    hessian = jax.jit(jax.hessian(lambda f: problem.loss_fn(unravel(f), data)))
    steps = h * np.eye(flat.size)
    return np.stack([[np.asarray(hessian(flat + s * e)) for e in steps] for s in (1.0, -1.0)])


def test_curvature_gradients_match_finite_differences_of_the_dense_hessian():
    problem = make_mlp(n=16)
    with jax.enable_x64(True):
        params, data = problem.jax_params(), problem.jax_data()
        hess = problem.dense_hessian()
        _, vecs = np.linalg.eigh(hess)
        top = vecs[:, ::-1][:, :2].T  # the two top eigenvectors, as rows
        stacked = jax.vmap(problem.unravel)(jnp.asarray(top))
        g = curvature_gradients(problem.loss_fn, params, stacked, data)
        flat = np.stack(
            [np.stack([problem.ravel(jax.tree.map(lambda x: x[i, j], g)) for j in range(2)])
             for i in range(2)]
        )  # fmt: skip
        h = 1e-5
        plus, minus = _dense_hessians(problem, h)
        for i in range(2):
            for j in range(2):
                want = np.einsum("a,mab,b->m", top[i], plus - minus, top[j]) / (2 * h)
                np.testing.assert_allclose(flat[i, j], want, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(flat[0, 1], flat[1, 0], rtol=1e-12)
        # sharpness_gradient is the diagonal, and for a simple eigenvalue it is grad lambda_max.
        s = sharpness_gradient(problem.loss_fn, params, stacked, data)
        np.testing.assert_allclose(problem.ravel(jax.tree.map(lambda x: x[0], s)), flat[0, 0])
        grad_lambda = (np.linalg.eigvalsh(plus)[:, -1] - np.linalg.eigvalsh(minus)[:, -1]) / (2 * h)
        np.testing.assert_allclose(flat[0, 0], grad_lambda, rtol=1e-5, atol=1e-7)
        # alpha = -grad L . grad S and beta = ||grad S||^2, against the dense vectors.
        grads = jax.grad(problem.loss_fn)(params, data)
        alpha = progressive_sharpening(grads, s)
        beta = self_stabilization(s, params)
        gl = problem.ravel(grads)
        np.testing.assert_allclose(alpha, [-gl @ flat[0, 0], -gl @ flat[1, 1]], rtol=1e-10)
        np.testing.assert_allclose(beta, [flat[0, 0] @ flat[0, 0], flat[1, 1] @ flat[1, 1]])
        gram = self_stabilization(g, params)
        assert gram.shape == (2, 2, 2, 2)
        np.testing.assert_allclose(gram[0, 1, 1, 1], flat[0, 1] @ flat[1, 1], rtol=1e-10)
        np.testing.assert_allclose(progressive_sharpening(grads, g)[0, 1], -gl @ flat[0, 1])


def _quartic(w, batch):
    return jnp.dot(batch["a"], w) ** 4 / 24 + jnp.sum(batch["c"] * w**4) / 12


def _quartic_instance(seed, n, k):
    rng = np.random.default_rng(seed)
    a, c, w = rng.normal(size=n), rng.uniform(0.5, 2.0, size=n), rng.normal(size=n)
    return a, c, w, np.linalg.qr(rng.normal(size=(n, k)))[0].T


def test_third_derivative_of_a_quartic_in_closed_form():
    """L(w) = (a.w)^4 / 24 + sum_m c_m w_m^4 / 12: H = (a.w)^2 a a^T / 2 + diag(c w^2) and
    D^3 L[u, v, .] = (a.w)(a.u)(a.v) a + 2 c w u v (element-wise)."""
    a, c, w, u = _quartic_instance(1, 5, 3)
    with jax.enable_x64(True):
        g = np.asarray(curvature_gradients(_quartic, jnp.asarray(w), jnp.asarray(u),
                                           {"a": jnp.asarray(a), "c": jnp.asarray(c)}))  # fmt: skip
    for i in range(3):
        for j in range(3):
            want = (a @ w) * (a @ u[i]) * (a @ u[j]) * a + 2 * c * w * u[i] * u[j]
            np.testing.assert_allclose(g[i, j], want, rtol=1e-12, atol=1e-14)


def test_masked_pairs_are_zero_and_the_rest_unchanged():
    a, c, w, u = _quartic_instance(2, 4, 3)
    with jax.enable_x64(True):
        batch = {"a": jnp.asarray(a), "c": jnp.asarray(c)}
        u = jnp.asarray(u)
        full = np.asarray(curvature_gradients(_quartic, jnp.asarray(w), u, batch))
        mask = jnp.array([True, False, True])
        masked = np.asarray(curvature_gradients(_quartic, jnp.asarray(w), u, batch, mask=mask))
    keep = np.asarray(mask)[:, None] & np.asarray(mask)[None, :]
    np.testing.assert_array_equal(masked[~keep], 0.0)
    np.testing.assert_allclose(masked[keep], full[keep], rtol=1e-14)
    assert np.abs(full[~keep]).min() > 0  # the masked entries were not zero to begin with
