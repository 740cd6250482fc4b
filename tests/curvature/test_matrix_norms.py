"""Spectral norm, stable and effective rank of weight matrices against float64 ``numpy.linalg``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynamics.curvature import matrix_norms as mn


@pytest.mark.parametrize("shape", [(7, 5), (3, 3, 4, 6)])
def test_against_numpy_svd_in_float64(shape):
    rng = np.random.default_rng(0)
    w = rng.normal(size=shape)
    m = w.reshape(-1, shape[-1])
    s = np.linalg.svd(m, compute_uv=False)
    with jax.enable_x64(True):
        sigma, v = mn.spectral_norm(jnp.asarray(w), jnp.asarray(rng.normal(size=shape[-1])), 500)
        assert float(sigma) == pytest.approx(s[0], rel=1e-10)
        assert float(jnp.linalg.norm(v)) == pytest.approx(1.0, rel=1e-12)
        # Warm start: 250 + 250 products from where the first 250 stopped equal 500 at once.
        half, v_half = mn.spectral_norm(jnp.asarray(w), jnp.asarray(rng.normal(size=shape[-1])), 5)
        assert float(half) <= s[0] * (1 + 1e-12)
        again, _ = mn.spectral_norm(jnp.asarray(w), v_half, 495)
        assert float(again) == pytest.approx(s[0], rel=1e-10)
        assert float(mn.stable_rank(jnp.asarray(w), sigma)) == pytest.approx(
            np.sum(s**2) / s[0] ** 2, rel=1e-10
        )
        p = s / s.sum()
        assert float(mn.effective_rank(jnp.asarray(w))) == pytest.approx(
            np.exp(-np.sum(p * np.log(p))), rel=1e-10
        )
    assert mn.spectral_target(w) == pytest.approx(np.sqrt(shape[-1] / np.prod(shape[:-1])))


def test_closed_forms_and_zero_matrices():
    with jax.enable_x64(True):
        q = jnp.eye(4)[:, :3]  # three equal singular values
        assert float(mn.effective_rank(q)) == pytest.approx(3.0, rel=1e-12)
        sigma, _ = mn.spectral_norm(q, jnp.ones(3), 3)
        assert float(mn.stable_rank(q, sigma)) == pytest.approx(3.0, rel=1e-12)
        zero = jnp.zeros((3, 2))
        sigma, v = mn.spectral_norm(zero, jnp.zeros(2), 4)
        assert float(sigma) == 0.0 and bool(jnp.all(jnp.isfinite(v)))
        assert float(mn.stable_rank(zero, sigma)) == 0.0
        assert float(mn.effective_rank(zero)) == 0.0


def test_matrix_names_drop_kernel_and_skip_vectors():
    params = {
        "Dense_0": {"kernel": jnp.zeros((3, 4)), "bias": jnp.zeros(4)},
        "emb": jnp.zeros((5, 2)),
    }
    assert mn.matrix_names(params) == [(1, "Dense_0"), (2, "emb")]
