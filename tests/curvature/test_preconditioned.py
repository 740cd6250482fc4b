"""Preconditioned sharpness and preconditioners read from optax states, against NumPy."""

import jax
import numpy as np
import optax
import pytest

from dynamics import curvature
from dynamics.optim.baselines import adam, adamw


def _run(tx, problem, steps):
    """Takes ``steps`` optimizer steps; returns params, state and the NumPy gradients seen."""
    params, data = problem.jax_params(), problem.jax_data()
    state = tx.init(params)
    grads_seen = []
    for _ in range(steps):
        g = jax.grad(problem.loss_fn)(params, data)
        grads_seen.append(problem.ravel(g))
        updates, state = tx.update(g, state, params)
        params = optax.apply_updates(params, updates)
    return params, state, grads_seen


@pytest.mark.parametrize("make_tx", [adam, adamw])
def test_adam_preconditioner_and_sharpness_against_dense(mlp, make_tx):
    b2, eps = 0.99, 1e-3
    with jax.enable_x64(True):
        params, state, grads = _run(make_tx(1e-2, b2=b2, eps=eps), mlp, 3)
        precond = curvature.adam_preconditioner(state, b2=b2, eps=eps)
        top = curvature.preconditioned_sharpness(
            mlp.loss_fn, params, precond, mlp.jax_data(), k=3, num_iters=51, key=jax.random.key(0)
        )
        h = mlp.dense_hessian_at(params)
    nu = np.zeros_like(grads[0])
    for g in grads:
        nu = b2 * nu + (1 - b2) * g**2
    p = np.sqrt(nu / (1 - b2**3)) + eps
    np.testing.assert_allclose(mlp.ravel(precond), p, rtol=1e-10)
    reference = np.linalg.eigvalsh(h / np.sqrt(np.outer(p, p)))[::-1][:3]
    np.testing.assert_allclose(np.asarray(top.eigenvalues), reference, rtol=1e-6)


@pytest.mark.parametrize("eps_in_sqrt", [True, False])
def test_rmsprop_preconditioner(mlp, eps_in_sqrt):
    decay, eps = 0.9, 1e-4
    with jax.enable_x64(True):
        _, state, grads = _run(
            optax.rmsprop(1e-2, decay=decay, eps=eps, eps_in_sqrt=eps_in_sqrt), mlp, 2
        )
        precond = curvature.rmsprop_preconditioner(state, eps=eps, eps_in_sqrt=eps_in_sqrt)
    nu = np.zeros_like(grads[0])
    for g in grads:
        nu = decay * nu + (1 - decay) * g**2
    expected = np.sqrt(nu + eps) if eps_in_sqrt else np.sqrt(nu) + eps
    np.testing.assert_allclose(mlp.ravel(precond), expected, rtol=1e-10)


def test_missing_state_is_an_error(mlp):
    with pytest.raises(ValueError, match="ScaleByAdamState"):
        curvature.adam_preconditioner(optax.sgd(0.1).init(mlp.jax_params()), b2=0.999, eps=1e-8)


def _spectral_radius(matrix):
    return np.max(np.abs(np.linalg.eigvals(matrix)))


@pytest.mark.parametrize("b", [0.5, 0.9])
def test_thresholds_are_where_the_recurrence_loses_stability(b):
    lr = 0.05

    # State (w, m) per eigendirection, a = lr * lambda, in optax's conventions.
    def heavy_ball(lam):
        a = lr * lam
        return np.array([[1 - a, -lr * b], [lam, b]])  # m' = b m + g; w' = w - lr m'

    def nesterov(lam):
        a = lr * lam
        return np.array([[1 - a * (1 + b), -lr * b * b], [lam, b]])  # w' = w - lr (g + b m')

    def adam_frozen(lam):  # m' = b m + (1 - b) g, w' = w - lr m' (P folded into lambda)
        a = lr * lam
        return np.array([[1 - a * (1 - b), -lr * b], [(1 - b) * lam, b]])

    cases = [
        (heavy_ball, curvature.momentum_threshold(lr, b)),
        (nesterov, curvature.nesterov_threshold(lr, b)),
        (adam_frozen, curvature.adam_threshold(lr, b)),
        (lambda lam: np.array([[1 - lr * lam]]), curvature.gd_threshold(lr)),
    ]
    for transition, threshold in cases:
        assert _spectral_radius(transition(0.999 * threshold)) < 1
        assert _spectral_radius(transition(1.001 * threshold)) > 1
    assert curvature.adam_threshold(1e-3, 0.9) == pytest.approx(38_000)


def test_unnormalized_sam_threshold():
    lr, rho = 0.2, 0.05
    lam = curvature.unnormalized_sam_threshold(lr, rho)
    # w' = w - lr H (w + rho H w): the multiplier reaches -1 at the threshold.
    assert 1 - lr * lam * (1 + rho * lam) == pytest.approx(-1.0, abs=1e-12)
    assert lam == pytest.approx(7.32, abs=5e-3)  # REFERENCES.md: rho 0.05, lr 0.2 -> 7.32
    assert curvature.unnormalized_sam_threshold(lr, 0.0) == pytest.approx(2 / lr)
