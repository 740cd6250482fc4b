"""Stability of a whole optimizer step: Arnoldi on the step's Jacobian against closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dynamics import curvature


def test_gd_spectral_radius_is_max_abs_one_minus_lr_lambda(mlp):
    lr = 0.5
    tx = optax.sgd(lr)
    with jax.enable_x64(True):
        lam = np.linalg.eigvalsh(mlp.dense_hessian())
        params = mlp.jax_params()
        result = curvature.step_stability(
            curvature.optax_step(mlp.loss_fn, tx),
            params,
            tx.init(params),
            mlp.jax_data(),
            k=2,
            num_iters=51,
            key=jax.random.key(0),
        )
    multipliers = 1 - lr * lam
    expected = multipliers[np.argsort(-np.abs(multipliers))][:2]
    np.testing.assert_allclose(np.asarray(result.eigenvalues).real, expected, rtol=1e-8)
    np.testing.assert_allclose(np.asarray(result.eigenvalues).imag, 0.0, atol=1e-8)
    assert float(result.spectral_radius) == pytest.approx(np.max(np.abs(multipliers)), rel=1e-8)


def _quadratic(lam_max):
    """0.5 sum h w^2 on a two-leaf pytree, top curvature ``lam_max``."""
    h = {"a": jnp.array([lam_max, 3.0, 1.0, 0.5, 0.1]), "b": jnp.array([[2.0, 7.0], [0.3, 5.0]])}

    def loss(w, batch):
        del batch
        return 0.5 * sum(jnp.sum(c * x**2) for c, x in zip(jax.tree.leaves(h), jax.tree.leaves(w)))

    return loss, jax.tree.map(lambda c: jnp.ones_like(c) * 0.1, h), h


@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_crosses_one_at_its_threshold(nesterov):
    lr, b = 0.1, 0.9
    threshold = (curvature.nesterov_threshold if nesterov else curvature.momentum_threshold)(lr, b)
    tx = optax.sgd(lr, momentum=b, nesterov=nesterov)
    radii = []
    with jax.enable_x64(True):
        for factor in (0.98, 1.02):
            loss, w, h = _quadratic(factor * threshold)
            result = curvature.step_stability(
                curvature.optax_step(loss, tx),
                w,
                tx.init(w),
                {},
                k=1,
                num_iters=18,
                key=jax.random.key(0),
            )
            # Independent reference: the 2 x 2 transition of (w, m) for every eigenvalue.
            expected = 0.0
            for lam in np.concatenate([np.ravel(x) for x in jax.tree.leaves(h)]):
                a = lr * lam
                if nesterov:
                    t = np.array([[1 - a * (1 + b), -lr * b * b], [lam, b]])
                else:
                    t = np.array([[1 - a, -lr * b], [lam, b]])
                expected = max(expected, np.max(np.abs(np.linalg.eigvals(t))))
            assert float(result.spectral_radius) == pytest.approx(expected, rel=1e-8)
            radii.append(float(result.spectral_radius))
    assert radii[0] < 1 < radii[1]
