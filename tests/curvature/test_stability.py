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
    flipped = np.abs(multipliers[multipliers < 0])
    assert float(result.flip_radius) == pytest.approx(np.max(flipped, initial=0.0), rel=1e-8)


@pytest.mark.parametrize("lr", [0.4, 0.7])
def test_gd_flip_radius_converges_before_the_krylov_space_is_exhausted(wide_mlp, lr):
    """316 parameters, 40 Arnoldi steps: the multiplier 1 - lr lambda_max (below -1 at lr 0.7,
    inside the unit circle at 0.4) is resolved although most multipliers cluster near 1."""
    tx = optax.sgd(lr)
    with jax.enable_x64(True):
        lam = np.linalg.eigvalsh(wide_mlp.dense_hessian())
        params = wide_mlp.jax_params()
        result = curvature.step_stability(
            curvature.optax_step(wide_mlp.loss_fn, tx),
            params,
            tx.init(params),
            wide_mlp.jax_data(),
            k=1,
            num_iters=40,
            key=jax.random.key(0),
        )
    assert lr * lam[-1] > 1  # the top multiplier has flipped sign
    assert float(result.flip_radius) == pytest.approx(lr * lam[-1] - 1, rel=1e-8)
    # The other end (the negative eigenvalues -1.05, -1.02, -1.00 cluster) converges slower.
    assert float(result.spectral_radius) == pytest.approx(
        max(lr * lam[-1] - 1, 1 - lr * lam[0]), rel=1e-6
    )


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
            # Past the threshold the escaping multiplier is the real one below -1.
            if factor > 1:
                assert float(result.flip_radius) == pytest.approx(expected, rel=1e-8)
    assert radii[0] < 1 < radii[1]
