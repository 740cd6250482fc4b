"""Scalar network: the forward pass and the sharpness at a gradient-flow solution."""

import jax
import jax.numpy as jnp
import numpy as np

from dynamics.data import DataSpec
from dynamics.losses import LOSSES
from dynamics.models import build_model


def test_output_and_exact_init():
    model = build_model(
        {"name": "scalar_network", "depth": 3, "init_weights": (0.5, -2.0, 3.0)},
        DataSpec((1,), "float32", 1),
    )
    params = model.init(jax.random.key(0), jnp.ones((1, 1)))
    np.testing.assert_array_equal(params["w"], [0.5, -2.0, 3.0])
    np.testing.assert_allclose(model.apply(params, jnp.array([[2.0], [-1.0]])), [[-6.0], [3.0]])
    random = build_model(
        {"name": "scalar_network", "depth": 8, "init_scale": 2.0}, DataSpec((1,), "float32", 1)
    ).init(jax.random.key(1), jnp.ones((1, 1)))
    assert random["w"].shape == (8,) and np.all(np.abs(random["w"] - 2.0) < 1.0)


def test_sharpness_at_gradient_flow_solution_matches_dense_hessian():
    """At w* with x prod w* = y, the Hessian of (f - y)^2 / 2 has top eigenvalue y^2 sum 1/w*^2."""
    x, y = 1.5, 2.0
    with jax.enable_x64(True):
        w0 = np.array([0.7, 1.1, 1.6, 0.9])
        # Gradient flow keeps w_i^2 - w_j^2: solve prod(w_i^2 + c) = (y/x)^2 for c by bisection.
        lo, hi = -np.min(w0**2) + 1e-12, 10.0
        for _ in range(200):
            c = 0.5 * (lo + hi)
            lo, hi = (c, hi) if np.prod(w0**2 + c) < (y / x) ** 2 else (lo, c)
        w_star = np.sign(w0) * np.sqrt(w0**2 + c)
        model = build_model(
            {"name": "scalar_network", "depth": 4, "init_weights": tuple(w_star)},
            DataSpec((1,), "float32", 1),
        )
        params = model.init(jax.random.key(0), jnp.ones((1, 1)))
        loss = LOSSES.build("mse", {})
        batch_x, batch_y = jnp.array([[x]]), jnp.array([[y]])

        def total(w):
            return jnp.mean(loss(model.apply({"w": w}, batch_x), batch_y))

        assert total(params["w"]) < 1e-20
        eigs = np.linalg.eigvalsh(np.asarray(jax.hessian(total)(params["w"])))
    np.testing.assert_allclose(eigs[-1], y**2 * np.sum(1 / w_star**2), rtol=1e-10)
    np.testing.assert_allclose(eigs[:-1], 0, atol=1e-10)  # rank one
