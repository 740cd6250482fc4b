"""The semidefinite complementarity solver against brute force on random small instances."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynamics.flows import complementarity


def _diagonal_instance(rng, k, skew=0.0):
    """M acting on diagonals by a k x k matrix A (plus identity on off-diagonal entries, which
    makes off-diagonal X zero at the solution): the semidefinite problem is the LCP (A, c)."""
    b = rng.normal(size=(k, k + 2))
    a = b @ b.T / (k + 2) + 0.1 * np.eye(k)
    s = rng.normal(size=(k, k))
    a = a + skew * (s - s.T)
    m = np.zeros((k, k, k, k))
    for i, j in itertools.product(range(k), repeat=2):
        if i == j:
            m[i, i, :, :] = 0.0
            for l in range(k):
                m[i, i, l, l] = a[i, l]
        else:
            m[i, j, i, j] = 1.0
    return m, a, np.diag(rng.normal(size=k))


def _lcp_brute_force(a, q):
    """The LCP x >= 0, a x - q >= 0, x (a x - q) = 0 by enumerating the supports."""
    k = len(q)
    found = []
    for size in range(k + 1):
        for support in itertools.combinations(range(k), size):
            x = np.zeros(k)
            idx = list(support)
            if idx:
                x[idx] = np.linalg.solve(a[np.ix_(idx, idx)], q[idx])
            y = a @ x - q
            if np.all(x >= -1e-12) and np.all(y >= -1e-10):
                found.append(x)
    return found


@pytest.mark.parametrize("skew", [0.0, 0.05])
def test_diagonal_instances_match_enumeration_of_supports(skew):
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        for trial in range(20):
            k = 2 + trial % 3
            m, a, c = _diagonal_instance(rng, k, skew)
            (want,) = _lcp_brute_force(a, np.diag(c))  # a P-matrix: exactly one solution
            sol = complementarity.solve(jnp.asarray(m), jnp.asarray(c), num_iters=3000)
            np.testing.assert_allclose(np.asarray(sol.x), np.diag(want), atol=1e-7)
            assert abs(float(sol.gap)) < 1e-8 and float(sol.infeasibility) < 1e-8


def _gram_instance(rng, k, n=7):
    g = rng.normal(size=(k, k, n))
    g = 0.5 * (g + g.transpose(1, 0, 2))
    return 0.5 * np.einsum("ijn,kln->ijkl", g, g), rng.normal(size=(k, k))


def test_two_by_two_semidefinite_instances_match_a_grid_search():
    """Symmetric Gram M (gradient descent's): the minimizer of 1/2 <X, M X> - <c, X> over PSD
    2 x 2 matrices, brute-forced on a grid of (a, b, rho) with X = [[a, r], [r, b]],
    r = rho sqrt(a b), then refined by a finer grid around the best point."""
    rng = np.random.default_rng(1)

    def objective(m, c, xs):
        mx = np.einsum("ijkl,nkl->nij", m, xs)
        return 0.5 * np.einsum("nij,nij->n", xs, mx) - np.einsum("ij,nij->n", c, xs)

    def grid(lo_a, hi_a, lo_b, hi_b, lo_r, hi_r, num=60):
        aa, bb, rr = np.meshgrid(
            np.linspace(lo_a, hi_a, num), np.linspace(lo_b, hi_b, num),
            np.linspace(lo_r, hi_r, num), indexing="ij",
        )  # fmt: skip
        aa, bb, rr = aa.ravel(), bb.ravel(), rr.ravel()
        off = rr * np.sqrt(aa * bb)
        return np.stack([np.stack([aa, off], -1), np.stack([off, bb], -1)], -2), aa, bb, rr

    with jax.enable_x64(True):
        for _ in range(8):
            m, c = _gram_instance(rng, 2)
            c = 0.5 * (c + c.T)
            sol = complementarity.solve(jnp.asarray(m), jnp.asarray(c), num_iters=5000)
            x = np.asarray(sol.x)
            scale = 2 * max(1.0, np.abs(x).max())
            xs, aa, bb, rr = grid(0, scale, 0, scale, -1, 1)
            best = np.argmin(objective(m, c, xs))
            da, dr = scale / 59, 2 / 59
            xs, *_ = grid(max(0, aa[best] - da), aa[best] + da, max(0, bb[best] - da),
                          bb[best] + da, max(-1, rr[best] - dr), min(1, rr[best] + dr))  # fmt: skip
            f = objective(m, c, xs)
            f_solver = objective(m, c, x[None])[0]
            assert f_solver <= f.min() + 1e-9
            np.testing.assert_allclose(x, xs[np.argmin(f)], atol=0.05 * scale)
            assert np.linalg.eigvalsh(x).min() > -1e-12
            assert abs(float(sol.gap)) < 1e-7 and float(sol.infeasibility) < 1e-7


def test_kkt_certificate_and_mask_on_larger_instances():
    rng = np.random.default_rng(2)
    with jax.enable_x64(True):
        for _ in range(5):
            m, c = _gram_instance(rng, 4, n=12)
            c = 0.5 * (c + c.T)
            mask = np.array([True, True, False, True])
            sol = complementarity.solve(jnp.asarray(m), jnp.asarray(c), num_iters=5000,
                                        mask=jnp.asarray(mask))  # fmt: skip
            x, y = np.asarray(sol.x), np.asarray(sol.y)
            assert np.all(x[2] == 0) and np.all(x[:, 2] == 0)
            keep = np.ix_(mask, mask)
            assert np.linalg.eigvalsh(x).min() > -1e-12
            assert np.linalg.eigvalsh(y[keep]).min() > -1e-7
            assert abs(np.sum(x * y)) < 1e-7


def test_no_curvature_gradient_gives_no_oscillation():
    with jax.enable_x64(True):
        sol = complementarity.solve(jnp.zeros((2, 2, 2, 2)), jnp.eye(2), num_iters=10)
        np.testing.assert_array_equal(np.asarray(sol.x), 0.0)
        assert float(sol.infeasibility) == pytest.approx(1.0)
