"""Sharpness-aware rules vs float64 NumPy re-derivations, closed forms and optax.contrib.sam."""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.sparse.linalg

from dynamics.optim import (
    OPTIMIZERS,
    sam,
    scale_by_asam,
    scale_by_sam,
    scale_by_sharpness_aware,
)
from dynamics.registry import ConfigError

# A linear classifier with the multi-label softplus margin loss: nonlinear gradients, with a
# closed-form gradient for the NumPy side.
_RNG = np.random.default_rng(0)
X = _RNG.normal(size=(16, 4))
Y = np.sign(_RNG.normal(size=(16, 3)))
W0 = {"kernel": 0.5 * _RNG.normal(size=(4, 3)), "bias": 0.1 * _RNG.normal(size=(3,))}


def np_loss(p):
    z = X @ p["kernel"] + p["bias"]
    return np.mean(np.sum(np.logaddexp(0.0, -Y * z), axis=1))


def np_grad(p):
    z = X @ p["kernel"] + p["bias"]
    s = -Y / (1.0 + np.exp(Y * z)) / X.shape[0]
    return {"kernel": X.T @ s, "bias": s.sum(0)}


def jax_loss(p):
    z = jnp.asarray(X) @ p["kernel"] + p["bias"]
    return jnp.mean(jnp.sum(jax.nn.softplus(-jnp.asarray(Y) * z), axis=1))


def np_rule_step(p, lr, rho, alpha, normalize, t_of, flood_level=None):
    """One SGD step of w - lr s [(1 - a) g + a grad L(w + e)], e = rho T^2 g / ||T g|| (the
    papers); returns the new parameters, the flooding sign and ||e||."""
    g = np_grad(p)
    t = {k: t_of(k, p[k]) for k in p}
    tg = {k: t[k] * g[k] for k in p}
    norm = np.sqrt(sum(np.sum(v**2) for v in tg.values()))
    factor = rho / norm if normalize else rho
    e = {k: factor * t[k] * tg[k] for k in p}
    ga = np_grad({k: p[k] + e[k] for k in p})
    sign = 1.0 if flood_level is None or np_loss(p) >= flood_level else -1.0
    e_norm = np.sqrt(sum(np.sum(v**2) for v in e.values()))
    return {k: p[k] - lr * sign * ((1 - alpha) * g[k] + alpha * ga[k]) for k in p}, sign, e_norm


def _unit(k, w):
    return np.ones_like(w)


def _asam_all(k, w):
    return np.abs(w) + 0.01


def _asam_matrices(k, w):
    return np.abs(w) + 0.01 if w.ndim > 1 else np.ones_like(w)


LR = 0.5
L0 = np_loss(W0)

CASES = {
    "sam": (dict(name="sam", rho=0.1), dict(rho=0.1, alpha=1.0, normalize=True, t_of=_unit)),
    "sam_unnormalized": (
        dict(name="sam", rho=0.1, normalize=False),
        dict(rho=0.1, alpha=1.0, normalize=False, t_of=_unit),
    ),
    # The default scales weight matrices only, as the reference code (Kwon et al. 2021) does.
    "asam": (dict(name="asam"), dict(rho=0.5, alpha=1.0, normalize=True, t_of=_asam_matrices)),
    "asam_all": (
        dict(name="asam", adaptive_mask="all"),
        dict(rho=0.5, alpha=1.0, normalize=True, t_of=_asam_all),
    ),
    "gradient_norm_regularization": (
        dict(name="gradient_norm_regularization", strength=0.02, radius=0.05),
        dict(rho=0.05, alpha=0.4, normalize=True, t_of=_unit),
    ),
    "gradient_norm_regularization_squared": (
        dict(name="gradient_norm_regularization", strength=0.06, radius=0.2, normalize=False),
        dict(rho=0.2, alpha=0.3, normalize=False, t_of=_unit),
    ),
    "sam_flooding": (
        dict(name="sam", rho=0.1, flood_level=L0 - 0.02),
        dict(rho=0.1, alpha=1.0, normalize=True, t_of=_unit, flood_level=L0 - 0.02),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_four_steps_match_numpy_float64(case):
    config, ref = CASES[case]
    config = dict(config)
    name = config.pop("name")
    with jax.enable_x64(True):
        tx = OPTIMIZERS.build(name, {"learning_rate": LR, **config}, "optimizer")
        params = jax.tree.map(jnp.asarray, W0)
        state = tx.init(params)
        # Base SGD keeps no state; the perturbation keeps the norm of its last e.
        assert len(jax.tree.leaves(state)) == 1 and float(state[0].perturbation_norm) == 0.0

        @jax.jit
        def step(params, state):
            loss, grads = jax.value_and_grad(jax_loss)(params)
            updates, state = tx.update(grads, state, params, grad_fn=jax.grad(jax_loss), loss=loss)
            return optax.apply_updates(params, updates), state

        expected, signs = W0, []
        for _ in range(4):
            params, state = step(params, state)
            expected, sign, e_norm = np_rule_step(expected, LR, **ref)
            signs.append(sign)
            for k in W0:
                np.testing.assert_allclose(np.asarray(params[k]), expected[k], rtol=1e-10)
            np.testing.assert_allclose(float(state[0].perturbation_norm), e_norm, rtol=1e-10)
    if "flood_level" in ref:  # the run must cross the flood level to test both branches
        assert set(signs) == {-1.0, 1.0}, signs


def _quadratic(dim=5, seed=1):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(dim, dim))
    h = a @ a.T + 0.5 * np.eye(dim)
    c = rng.normal(size=dim)
    w = rng.normal(size=dim)
    return h, c, w


def _quadratic_loss(h, c):
    def loss(v):
        return 0.5 * v @ jnp.asarray(h) @ v - jnp.asarray(c) @ v

    return loss


@pytest.mark.parametrize("adaptive", [False, True])
def test_perturbation_is_the_closed_form_on_a_quadratic(adaptive):
    """grad L(w + e) - grad L(w) = H e on L = w'Hw/2 - c'w, so e is recovered by a solve."""
    h, c, w = _quadratic()
    rho, eta = 0.3, 0.01
    g = h @ w - c
    t = np.abs(w) + eta if adaptive else np.ones_like(w)
    e_closed = rho * t**2 * g / np.linalg.norm(t * g)
    with jax.enable_x64(True):
        tx = (
            scale_by_asam(rho=rho, eta=eta, adaptive_mask="all")
            if adaptive
            else scale_by_sam(rho=rho)
        )
        loss = _quadratic_loss(h, c)
        out, _ = tx.update(jnp.asarray(g), tx.init(w), jnp.asarray(w), grad_fn=jax.grad(loss))
    e = np.linalg.solve(h, np.asarray(out) - g)
    np.testing.assert_allclose(e, e_closed, rtol=1e-10)
    np.testing.assert_allclose(np.asarray(out), h @ (w + e_closed) - c, rtol=1e-10)
    if not adaptive:
        np.testing.assert_allclose(np.linalg.norm(e), rho, rtol=1e-12)


@pytest.mark.parametrize("base", ["sgd", "momentum"])
def test_sam_matches_optax_contrib_sam(base):
    """optax.contrib.sam in opaque mode with a normalized-SGD(rho) adversary and sync period 2
    is one SAM step per call; with eps = 0 (optax's normalize has none) the trajectories agree."""
    lr, rho = 0.3, 0.1
    with jax.enable_x64(True):
        ours = OPTIMIZERS.build("sam", {"learning_rate": lr, "rho": rho, "base": base, "eps": 0.0})
        outer = optax.sgd(lr, momentum=0.9 if base == "momentum" else None)
        adversary = optax.chain(optax.contrib.normalize(), optax.sgd(rho))
        theirs = optax.contrib.sam(outer, adversary, sync_period=2, opaque_mode=True)

        def run(tx, grad_fn):
            params = jax.tree.map(jnp.asarray, W0)
            state = tx.init(params)

            @jax.jit
            def step(params, state):
                updates, state = tx.update(
                    jax.grad(jax_loss)(params), state, params, grad_fn=grad_fn
                )
                return optax.apply_updates(params, updates), state

            for _ in range(5):
                params, state = step(params, state)
            return params

        a = run(ours, jax.grad(jax_loss))
        b = run(theirs, lambda p, _: jax.grad(jax_loss)(p))
        # The transform-taking form, as optax.contrib.sam takes its outer optimizer.
        c = run(sam(outer, rho=rho, eps=0.0), jax.grad(jax_loss))
    for k in W0:
        np.testing.assert_allclose(np.asarray(a[k]), np.asarray(b[k]), rtol=1e-12)
        np.testing.assert_allclose(np.asarray(c[k]), np.asarray(a[k]), rtol=1e-15)
        assert not np.allclose(np.asarray(a[k]), W0[k])


def test_unnormalized_sam_stability_threshold_on_a_quadratic():
    """GD on grad L(w + rho grad L(w)) maps an eigen-component by m = 1 - lr l (1 + rho l), which
    crosses -1 at lr l (1 + rho l) = 2, i.e. l* = (sqrt(1 + 8 rho / lr) - 1) / (2 rho)."""
    lr, rho, steps = 0.2, 0.05, 300
    l_star = (np.sqrt(1 + 8 * rho / lr) - 1) / (2 * rho)
    np.testing.assert_allclose(l_star, 7.3205080757, rtol=1e-9)
    # Two below l*, two above it yet below GD's threshold 2 / lr = 10.
    lam = np.array([0.5, 0.98, 1.02, 1.3]) * l_star
    assert lam[-1] < 2 / lr
    m = 1 - lr * lam * (1 + rho * lam)
    with jax.enable_x64(True):
        tx = OPTIMIZERS.build(
            "sam", {"learning_rate": lr, "rho": rho, "normalize": False}, "optimizer"
        )
        grad = jax.grad(lambda w: 0.5 * jnp.sum(jnp.asarray(lam) * w**2))
        w0 = jnp.ones(4)

        def body(carry, _):
            w, state = carry
            updates, state = tx.update(grad(w), state, w, grad_fn=grad)
            w = optax.apply_updates(w, updates)
            return (w, state), w

        _, path = jax.lax.scan(body, (w0, tx.init(w0)), None, length=steps)
    path = np.asarray(path)
    np.testing.assert_allclose(path[0], m, rtol=1e-12)
    np.testing.assert_allclose(path[-1], m**steps, rtol=1e-9)
    assert np.all(np.abs(path[-1, :2]) < 1e-4) and np.all(np.abs(path[-1, 2:]) > 1e4)


@pytest.mark.parametrize(
    "tx",
    [
        scale_by_sam(rho=0.05),
        scale_by_sam(rho=0.05, normalize=False),
        scale_by_asam(rho=0.5, eta=0.01),
        scale_by_sharpness_aware(rho=0.05, alpha=0.5),
    ],
    ids=["sam", "sam_unnormalized", "asam", "gnr"],
)
def test_zero_gradient_gives_zero_not_nan(tx):
    grad = jax.grad(lambda p: 0.5 * jnp.sum(p["w"] ** 2) + 0.5 * jnp.sum(p["b"] ** 2))
    params = {"w": jnp.zeros((3, 2)), "b": jnp.zeros(2)}
    out, state = jax.jit(lambda p: tx.update(grad(p), tx.init(p), p, grad_fn=grad))(params)
    assert float(state.perturbation_norm) == 0.0
    for leaf in jax.tree.leaves(out):
        np.testing.assert_array_equal(np.asarray(leaf), 0.0)


def test_flooding_alone_needs_no_extra_gradient():
    """alpha = 0 with a flood level b is Ishida et al.'s sign(L - b) g, without calling grad_fn."""
    tx = scale_by_sharpness_aware(alpha=0.0, flood_level=1.0)
    g = jnp.array([1.0, -2.0])
    below, _ = tx.update(g, tx.init(g), g, loss=jnp.array(0.5))
    above, _ = tx.update(g, tx.init(g), g, loss=jnp.array(1.5))
    np.testing.assert_array_equal(np.asarray(below), [-1.0, 2.0])
    np.testing.assert_array_equal(np.asarray(above), [1.0, -2.0])


def test_base_optimizer_from_a_mapping():
    """``base={"name": "adam", ...}``: Adam's first step is -lr g / (|g| + eps) of SAM's g."""
    lr, rho = 0.01, 0.05
    h, c, w = _quadratic()
    with jax.enable_x64(True):
        tx = OPTIMIZERS.build(
            "sam",
            {"learning_rate": lr, "rho": rho, "base": {"name": "adam", "b1": 0.5, "eps": 1e-3}},
            "optimizer",
        )
        loss = _quadratic_loss(h, c)
        updates, _ = tx.update(
            jax.grad(loss)(w), tx.init(w), jnp.asarray(w), grad_fn=jax.grad(loss)
        )
    g = h @ w - c
    g_sam = h @ (w + rho * g / np.linalg.norm(g)) - c
    np.testing.assert_allclose(
        np.asarray(updates), -lr * g_sam / (np.abs(g_sam) + 1e-3), rtol=1e-10
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"base": "adamx"}, "optimizer.base.name"),
        ({"base": {"name": "adam", "b9": 0.9}}, "optimizer.base.b9"),
        ({"base": {"b1": 0.9}}, "optimizer.base needs a name"),
        ({"base": {"name": "sgd", "learning_rate": 0.1}}, "optimizer.base.learning_rate"),
        ({"rhoo": 0.1}, "optimizer.rhoo"),
    ],
)
def test_config_errors_name_the_field(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        OPTIMIZERS.build("sam", {"learning_rate": 0.1, **kwargs}, "optimizer")


def test_missing_extra_arguments_fail_loudly():
    g = jnp.ones(3)
    with pytest.raises(ValueError, match="grad_fn"):
        scale_by_sam().update(g, optax.EmptyState(), g)
    with pytest.raises(ValueError, match="loss"):
        scale_by_sam(flood_level=0.1).update(g, optax.EmptyState(), g, grad_fn=lambda p: p)
    with pytest.raises(ConfigError, match="radius"):
        OPTIMIZERS.build("gradient_norm_regularization", {"learning_rate": 0.1, "radius": 0.0})


@pytest.mark.slow
def test_unnormalized_sam_sharpness_settles_at_its_stability_threshold():
    """Edge of stability under SAM (Agarwala & Dauphin 2023): full-batch unnormalized SAM on a tanh
    MLP sharpens until the top Hessian eigenvalue reaches l* with lr l* (1 + rho l*) = 2 and stays
    there, below GD's 2 / lr. Measured here: 10.05, 7.34, 6.26 against 10, 7.32, 6.18 at step 1500.
    """
    lr, steps = 0.2, 1500
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(256, 16)), jnp.float32)
    y = jax.nn.one_hot(rng.integers(0, 4, 256), 4)
    sizes = [16, 32, 32, 32, 4]
    keys = jax.random.split(jax.random.key(0), len(sizes) - 1)
    params0 = [
        (jax.random.normal(k, (m, n)) / np.sqrt(m), jnp.zeros(n))
        for k, m, n in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]

    def loss(params):
        h = x
        for i, (w, b) in enumerate(params):
            h = h @ w + b
            h = jnp.tanh(h) if i < len(params) - 1 else h
        return 0.5 * jnp.mean(jnp.sum((h - y) ** 2, axis=-1))

    def train(tx):
        tx = optax.with_extra_args_support(tx)

        def body(carry, _):
            params, state = carry
            updates, state = tx.update(
                jax.grad(loss)(params), state, params, grad_fn=jax.grad(loss)
            )
            return (optax.apply_updates(params, updates), state), None

        (params, _), _ = jax.lax.scan(body, (params0, tx.init(params0)), None, length=steps)
        return params

    rhos = [0.0, 0.05, 0.1]
    txs = [
        OPTIMIZERS.build("sam", {"learning_rate": lr, "rho": rho, "normalize": False})
        for rho in rhos
    ]
    finals = jax.jit(lambda: [train(tx) for tx in txs])()
    for rho, params in zip(rhos, finals, strict=True):
        # Top Hessian eigenvalue by SciPy's Lanczos (ARPACK) on exact Hessian-vector products.
        flat, unravel = jax.flatten_util.ravel_pytree(params)
        grad_flat = jax.grad(lambda v: loss(unravel(v)))
        hvp = jax.jit(lambda u, flat=flat: jax.jvp(grad_flat, (flat,), (u,))[1])
        operator = scipy.sparse.linalg.LinearOperator(
            (flat.size, flat.size), matvec=lambda u: np.asarray(hvp(jnp.asarray(u, jnp.float32)))
        )
        sharpness = scipy.sparse.linalg.eigsh(operator, k=1, which="LA", tol=1e-6)[0][0]
        predicted = 2 / lr if rho == 0 else (np.sqrt(1 + 8 * rho / lr) - 1) / (2 * rho)
        print(f"rho {rho}: sharpness {sharpness:.3f}, predicted {predicted:.3f}")
        assert 0.97 * predicted < sharpness < 1.04 * predicted, (rho, sharpness, predicted)
