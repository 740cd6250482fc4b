"""The grokking probe's diagnostics against NumPy re-derivations on a tiny softmax regression."""

import jax
import jax.numpy as jnp
import numpy as np

from dynamics.losses import cross_entropy
from dynamics.train.probes import PROBES
from dynamics.train.probes.base import ProbeContext
from dynamics.train.probes.grokking import softmax_collapse_fraction


def test_softmax_collapse_is_exact_one_hot_in_float32():
    logits = jnp.array([[0.0, 30.0, 3.0], [0.0, 1.0, 2.0], [-200.0, 0.0, 0.0]], jnp.float32)
    # Row 0: 1 + exp(-27) + exp(-30) rounds to 1 in float32 (eps 1.2e-7) but not in float64;
    # rows 1 and 2 keep two visible terms in either precision.
    np.testing.assert_allclose(softmax_collapse_fraction(logits), 1 / 3, rtol=1e-6)
    with jax.enable_x64(True):
        assert float(softmax_collapse_fraction(logits.astype(jnp.float64))) == 0.0


def test_probe_metrics_match_numpy():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 4)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2], np.int32)
    w = rng.standard_normal((4, 3)).astype(np.float32)
    w[:, 0] *= 60.0  # some examples collapse onto class 0
    per_example = cross_entropy()

    def apply_fn(params, inputs):
        return inputs @ params["w"]

    def loss_fn(params, batch):
        return jnp.mean(per_example(apply_fn(params, batch["x"]), batch["y"]))

    batch = {"x": jnp.asarray(x), "y": jnp.asarray(y)}
    ctx = ProbeContext(loss_fn, apply_fn, per_example, batch, None, 3, None, None, None, None)
    probe = PROBES.build("grokking", {"every": 1})
    probe.setup(ctx)
    metrics, _ = probe(ctx, 0, {"w": jnp.asarray(w)}, None, {})

    z = x.astype(np.float64) @ w
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    grad = x.T @ (p - np.eye(3)[y]) / len(y)
    cosine = np.sum(grad * w) / (np.linalg.norm(grad) * np.linalg.norm(w))
    z32 = z.astype(np.float32)
    collapsed = np.sum(np.exp(z32 - z32.max(1, keepdims=True)), axis=1) == 1.0
    losses = np.asarray(per_example(jnp.asarray(z32), jnp.asarray(y)))
    np.testing.assert_allclose(metrics["grad_weight_cosine"], cosine, rtol=1e-4)
    np.testing.assert_allclose(metrics["weight_norm"], np.linalg.norm(w), rtol=1e-6)
    np.testing.assert_allclose(metrics["max_logit"], np.abs(z).max(), rtol=1e-5)
    assert collapsed.any()
    np.testing.assert_allclose(metrics["softmax_collapse"], collapsed.mean(), rtol=1e-6)
    np.testing.assert_allclose(metrics["zero_loss_fraction"], np.mean(losses == 0.0), rtol=1e-6)
