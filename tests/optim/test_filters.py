"""Gradient filters vs float64 NumPy ports of the reference code (Grokfast, ⊥Grad)."""

from collections import deque

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dynamics.optim import FILTERS, grokfast_ema, grokfast_ma, orthogonal_gradient

_RNG = np.random.default_rng(0)
SHAPES = {"kernel": (4, 3), "bias": (3,)}
GRADS = [{k: _RNG.normal(size=s) for k, s in SHAPES.items()} for _ in range(6)]
PARAMS = {k: _RNG.normal(size=s) for k, s in SHAPES.items()}


def run_filter(tx, grads, params=PARAMS):
    """Feeds the gradient sequence through ``tx`` under jit in float64; returns the outputs."""
    with jax.enable_x64(True):
        params = jax.tree.map(jnp.asarray, params)
        state = tx.init(params)
        update = jax.jit(tx.update)
        outs = []
        for g in grads:
            out, state = update(jax.tree.map(jnp.asarray, g), state, params)
            outs.append(jax.tree.map(np.asarray, out))
    return outs


def assert_trees_close(actual, expected, rtol=1e-12):
    for k in expected:
        np.testing.assert_allclose(actual[k], expected[k], rtol=rtol, atol=1e-14)


def test_grokfast_ema_matches_reference_port():
    """Port of ``gradfilter_ema``: the EMA dict starts as the first gradient, then
    ``ema = ema * alpha + g * (1 - alpha)`` and ``g = g + ema * lamb`` on every step."""
    alpha, lamb = 0.9, 2.0
    outs = run_filter(grokfast_ema(alpha=alpha, lamb=lamb), GRADS)
    ema = None
    for g, out in zip(GRADS, outs, strict=True):
        if ema is None:
            ema = dict(g)
        ema = {k: ema[k] * alpha + g[k] * (1 - alpha) for k in g}
        assert_trees_close(out, {k: g[k] + ema[k] * lamb for k in g})
    assert_trees_close(outs[0], {k: 3.0 * GRADS[0][k] for k in GRADS[0]})


@pytest.mark.parametrize("filter_type", ["mean", "sum"])
@pytest.mark.parametrize("warmup", [True, False])
def test_grokfast_ma_matches_reference_port(warmup, filter_type):
    """Port of ``gradfilter_ma``: a deque of the last ``window`` gradients, their mean or sum
    times ``lamb`` added, only once the deque is full when ``warmup`` is set."""
    window, lamb = 3, 5.0
    tx = grokfast_ma(window=window, lamb=lamb, filter_type=filter_type, warmup=warmup)
    outs = run_filter(tx, GRADS)
    history = {k: deque(maxlen=window) for k in SHAPES}
    for step, (g, out) in enumerate(zip(GRADS, outs, strict=True)):
        expected = {}
        for k in g:
            history[k].append(g[k])
            if not warmup or len(history[k]) == window:
                divisor = len(history[k]) if filter_type == "mean" else 1
                expected[k] = g[k] + sum(history[k]) / divisor * lamb
            else:
                expected[k] = g[k]
        assert_trees_close(out, expected)
        if warmup and step < window - 1:  # the documented warm-up: unchanged gradients
            assert_trees_close(out, g, rtol=0)


def np_orthogonal(g, w):
    """The reference ``_orthogonalize_gradients`` on one flattened tensor."""
    w, g = w.ravel(), g.ravel()
    g_orth = g - np.dot(w, g) / (np.dot(w, w) + 1e-30) * w
    return g_orth * (np.linalg.norm(g) / (np.linalg.norm(g_orth) + 1e-30))


def test_orthogonal_gradient_matches_reference_port():
    outs = run_filter(orthogonal_gradient(), GRADS[:3])
    for g, out in zip(GRADS[:3], outs, strict=True):
        for k in g:
            np.testing.assert_allclose(out[k].ravel(), np_orthogonal(g[k], PARAMS[k]), rtol=1e-12)
            # The defining properties, per tensor: orthogonal to w, with the norm of g.
            np.testing.assert_allclose(np.vdot(out[k], PARAMS[k]), 0.0, atol=1e-12)
            np.testing.assert_allclose(np.linalg.norm(out[k]), np.linalg.norm(g[k]), rtol=1e-12)


def test_orthogonal_gradient_degenerate_tensors():
    """Zero weights leave g unchanged; a zero gradient and a gradient parallel to w give zeros."""
    params = {"kernel": np.zeros((4, 3)), "bias": PARAMS["bias"]}
    grads = {"kernel": GRADS[0]["kernel"], "bias": 2.0 * PARAMS["bias"]}
    (out,) = run_filter(orthogonal_gradient(), [grads], params)
    np.testing.assert_allclose(out["kernel"], grads["kernel"], rtol=1e-12)
    np.testing.assert_allclose(out["bias"], 0.0, atol=1e-12)
    (out,) = run_filter(orthogonal_gradient(), [{k: np.zeros(s) for k, s in SHAPES.items()}])
    for leaf in out.values():
        np.testing.assert_array_equal(leaf, 0.0)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_orthogonal_gradient_in_low_precision(dtype):
    """The 1e-30 guard is zero in float16, so zero weights and gradient would give 0/0 unless the
    dot products are accumulated in float32; the output keeps the gradient's dtype and is
    orthogonal to w to that dtype's accuracy."""
    w = jnp.asarray(PARAMS["kernel"], dtype)
    g = jnp.asarray(GRADS[0]["kernel"], dtype)
    tx = orthogonal_gradient()
    out, _ = tx.update(g, tx.init(w), w)
    assert out.dtype == dtype
    out32, w32 = np.asarray(out, np.float32), np.asarray(w, np.float32)
    assert abs(np.vdot(out32, w32)) < 2e-2 * np.linalg.norm(out32) * np.linalg.norm(w32)
    zero, _ = tx.update(jnp.zeros_like(g), tx.init(w), jnp.zeros_like(w))
    np.testing.assert_array_equal(np.asarray(zero, np.float32), 0.0)


@pytest.mark.parametrize("name", ["grokfast_ema", "grokfast_ma", "orthogonal_gradient"])
def test_registered_filters_chain_before_an_optimizer(name):
    """The runner's composition: filter -> optimizer, with extra args the filters ignore."""
    tx = optax.with_extra_args_support(
        optax.chain(FILTERS.build(name, {}, "optimizer.filter"), optax.sgd(0.1))
    )
    params = {k: jnp.asarray(v, jnp.float32) for k, v in PARAMS.items()}
    grads = {k: jnp.asarray(v, jnp.float32) for k, v in GRADS[0].items()}
    updates, _ = jax.jit(lambda g, p: tx.update(g, tx.init(p), p, grad_fn=lambda q: q))(
        grads, params
    )
    # One step from a fresh state: EMA gives (1 + 2) g, MA (warm-up) g, ⊥Grad has |g|'s norm.
    norm = {"grokfast_ema": 3.0, "grokfast_ma": 1.0, "orthogonal_gradient": 1.0}[name]
    for k in grads:
        np.testing.assert_allclose(
            np.linalg.norm(np.asarray(updates[k])),
            0.1 * norm * np.linalg.norm(np.asarray(grads[k])),
            rtol=1e-5,
        )


@pytest.mark.slow
def test_orthogonal_gradient_prevents_naive_loss_minimization():
    """Prieto et al. 2025 on modular addition (one-hot pairs, ReLU MLP without biases, 40% train,
    full batch, AdamW with eps 1e-25 and no weight decay): plain AdamW memorizes and does not
    generalize, while ⊥AdamW (the filter chained before the same AdamW) does. Scaled down from
    p = 113, width 200 (REFERENCES.md) to p = 59, width 128, 400 steps."""
    p, width, steps = 59, 128, 400
    a, b = (v.ravel() for v in np.meshgrid(np.arange(p), np.arange(p), indexing="ij"))
    labels = (a + b) % p
    perm = np.random.default_rng(0).permutation(p * p)
    train, test = perm[: int(0.4 * p * p)], perm[int(0.4 * p * p) :]

    def init(key):
        # PyTorch's default Linear init, U(+-1/sqrt(fan_in)), as in the reference.
        shapes = [(2 * p, width), (width, width), (width, p)]
        keys = jax.random.split(key, len(shapes))
        return [
            jax.random.uniform(k, s, minval=-1.0, maxval=1.0) / np.sqrt(s[0])
            for k, s in zip(keys, shapes, strict=True)
        ]

    def logits(w, idx):
        h = jax.nn.relu(w[0][a[idx]] + w[0][p + b[idx]])  # one-hot [a, b] @ w[0]
        return jax.nn.relu(h @ w[1]) @ w[2]

    def loss(w):
        z = logits(w, train)
        return optax.softmax_cross_entropy_with_integer_labels(z, labels[train]).mean()

    def accuracy(w, idx):
        return jnp.mean(jnp.argmax(logits(w, idx), -1) == labels[idx])

    def run(tx):
        def body(carry, _):
            w, state = carry
            updates, state = tx.update(jax.grad(loss)(w), state, w)
            return (optax.apply_updates(w, updates), state), None

        w = init(jax.random.key(0))
        (w, _), _ = jax.lax.scan(body, (w, tx.init(w)), None, length=steps)
        return accuracy(w, train), accuracy(w, test)

    adamw = optax.adamw(5e-3, b2=0.99, eps=1e-25, weight_decay=0.0)
    ortho = optax.chain(FILTERS.build("orthogonal_gradient", {}), adamw)
    (train_plain, test_plain), (train_ortho, test_ortho) = jax.jit(
        lambda: (run(adamw), run(ortho))
    )()
    print(
        f"AdamW train/test {train_plain:.3f}/{test_plain:.3f}, "
        f"⊥AdamW {train_ortho:.3f}/{test_ortho:.3f}"
    )
    assert train_plain > 0.99 and test_plain < 0.05
    assert train_ortho > 0.95 and test_ortho > 0.9
