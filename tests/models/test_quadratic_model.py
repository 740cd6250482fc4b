"""Second-order regression model: exactly quadratic, fixed coefficients, the documented scalings."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynamics.data import DataSpec
from dynamics.models import build_model
from dynamics.models.quadratic import coefficients
from dynamics.registry import ConfigError

D, K, P = 6, 2, 10


@pytest.fixture(scope="module")
def model():
    return build_model(
        {"name": "quadratic", "num_params": P, "epsilon": 0.5, "coeff_seed": 3, "init_scale": 1.0},
        DataSpec((D,), "float32", K),
    )


def test_outputs_match_numpy_quadratic_form(model):
    g, q = coefficients(D, K, P, 0.5, 3)
    x = np.random.default_rng(0).standard_normal((4, D))
    theta = np.random.default_rng(1).standard_normal(P)
    expected = np.einsum("bi,ikj,j->bk", x, g, theta) + 0.5 * np.einsum(
        "bi,ikjl,j,l->bk", x, q, theta, theta
    )
    out = model.apply({"theta": jnp.asarray(theta, jnp.float32)}, jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
    # One-hot inputs read out one datum's quadratic: the paper's per-datum model.
    e2 = np.eye(D, dtype=np.float32)[[2]]
    np.testing.assert_allclose(
        model.apply({"theta": jnp.asarray(theta, jnp.float32)}, e2)[0],
        g[2] @ theta + 0.5 * np.einsum("kjl,j,l->k", q[2], theta, theta),
        rtol=1e-4,
        atol=1e-5,
    )


def test_jacobian_and_hessian_of_outputs(model):
    g, q = coefficients(D, K, P, 0.5, 3)
    x = np.eye(D, dtype=np.float32)[[1]]
    with jax.enable_x64(True):
        theta = jnp.asarray(np.random.default_rng(2).standard_normal(P))

        def f(t):
            return model.apply({"theta": t}, x)[0]

        jac, hess = jax.jacfwd(f)(theta), jax.hessian(f)(theta)
    np.testing.assert_allclose(jac, g[1] + q[1] @ np.asarray(theta), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(hess, q[1], rtol=1e-5, atol=1e-7)  # constant second derivative


def test_coefficients_fixed_by_seed_and_scalings():
    g, q = coefficients(3, 1, 400, 0.2, 0)
    g2, q2 = coefficients(3, 1, 400, 0.2, 0)
    np.testing.assert_array_equal(q, q2)
    np.testing.assert_array_equal(q[0, 0], q[0, 0].T)
    np.testing.assert_allclose(np.sum(g**2, axis=-1), 1.0, rtol=0.2)  # O(1) NTK
    theta = np.random.default_rng(0).standard_normal(400)
    theta /= np.linalg.norm(theta)
    np.testing.assert_allclose(np.linalg.norm(q[:, 0] @ theta, axis=-1), 0.2, rtol=0.15)
    np.testing.assert_allclose(np.linalg.eigvalsh(q[0, 0].astype(np.float64))[-1], 0.4, rtol=0.1)
    g0, q0 = coefficients(3, 1, 400, 0.0, 0)
    assert np.all(q0 == 0) and np.array_equal(g0, g)


def test_init_and_limits(model):
    zero = build_model({"name": "quadratic", "num_params": P}, DataSpec((D,), "float32", K))
    p0 = zero.init(jax.random.key(0), jnp.zeros((1, D)))
    assert np.all(p0["theta"] == 0) and np.all(zero.apply(p0, jnp.ones((2, D))) == 0)
    p1 = model.init(jax.random.key(0), jnp.zeros((1, D)))
    assert p1["theta"].shape == (P,) and 0.05 < float(jnp.std(p1["theta"])) < 1.0
    with pytest.raises(ConfigError, match="num_params"):
        build_model({"name": "quadratic", "num_params": 5000}, DataSpec((100,), "float32", 1))


def test_gradient_descent_sharpens_the_quadratic_model_but_not_the_linear_one():
    """Agarwala et al.'s claim at small scale: 20 one-hot data, 60 parameters, stable GD (lr 1).

    The dense Hessian's top eigenvalue rises 0.23 -> 0.38 with epsilon = 0.5 and stays at its
    initial value for the linear model (epsilon = 0).
    """
    x = jnp.eye(20)
    y = jnp.asarray(np.random.default_rng(0).standard_normal((20, 1)), jnp.float32)

    def sharpness_before_after(epsilon):
        m = build_model(
            {"name": "quadratic", "num_params": 60, "epsilon": epsilon},
            DataSpec((20,), "float32", 1),
        )

        def loss(theta):
            return 0.5 * jnp.mean(jnp.sum((m.apply({"theta": theta}, x) - y) ** 2, axis=1))

        def top_eig(theta):
            return jnp.linalg.eigvalsh(jax.hessian(loss)(theta))[-1]

        @jax.jit
        def run(theta):
            after = jax.lax.fori_loop(0, 1000, lambda _, t: t - jax.grad(loss)(t), theta)
            return top_eig(theta), top_eig(after), loss(after)

        return run(m.init(jax.random.key(0), x)["theta"])

    before, after, final_loss = sharpness_before_after(0.5)
    assert after > 1.4 * before and final_loss < 1e-6
    before, after, final_loss = sharpness_before_after(0.0)
    np.testing.assert_allclose(after, before, rtol=1e-4)
    assert final_loss < 1e-6
