"""Subspace diagnostics on pytree bases against NumPy on the flattened vectors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynamics import curvature


def _as_tree(rows):
    """[k, 12] NumPy rows -> a basis pytree {"w": [k, 3, 2], "b": [k, 6]}."""
    rows = jnp.asarray(rows)
    return {"w": rows[:, :6].reshape(-1, 3, 2), "b": rows[:, 6:]}


def test_fraction_and_overlap_match_numpy():
    rng = np.random.default_rng(0)
    a, _ = np.linalg.qr(rng.normal(size=(12, 3)))
    b, _ = np.linalg.qr(a + 0.3 * rng.normal(size=(12, 3)))
    g = rng.normal(size=12)
    with jax.enable_x64(True):
        basis_a, basis_b = _as_tree(a.T), _as_tree(b.T)
        vector = jax.tree.map(lambda x: x[0], _as_tree(g[None]))
        fraction = curvature.subspace_fraction(basis_a, vector)
        overlap = curvature.subspace_overlap(basis_a, basis_b)
        self_overlap = curvature.subspace_overlap(basis_a, basis_a)
    assert float(fraction) == pytest.approx(np.sum((a.T @ g) ** 2) / np.sum(g**2), rel=1e-12)
    assert float(overlap) == pytest.approx(np.sum((a.T @ b) ** 2) / 3, rel=1e-12)
    assert float(self_overlap) == pytest.approx(1.0, rel=1e-12)
