"""The first probes against NumPy: full-split loss/accuracy (whole or in chunks), weight norms."""

import jax
import numpy as np
import pytest

from configs import classification
from dynamics.losses import LOSSES
from dynamics.train import sharding
from dynamics.train.probes import PROBES, ProbeContext


def _linear(params, x):
    return x @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"]


def _numpy_metrics(params, x, y):
    outputs = x @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"]
    loss = 0.5 * np.sum((outputs - np.eye(outputs.shape[1])[y]) ** 2, axis=1)
    return loss.mean(), np.mean(np.argmax(outputs, 1) == y)


@pytest.mark.parametrize("batch_size", [None, 7, 100])
def test_evaluation_and_weight_norms_match_numpy(batch_size):
    rng = np.random.default_rng(0)
    train = {"x": rng.standard_normal((30, 4)), "y": rng.integers(0, 3, 30).astype(np.int32)}
    test = {"x": rng.standard_normal((11, 4)), "y": rng.integers(0, 3, 11).astype(np.int32)}
    params = {"Dense_0": {"kernel": rng.standard_normal((4, 3)), "bias": rng.standard_normal(3)}}
    with jax.enable_x64(True):
        ctx = ProbeContext(
            loss_fn=None, apply_fn=_linear, per_example_loss=LOSSES.build("mse"),
            train=jax.device_put(train), test=jax.device_put(test), num_classes=3,
            learning_rate=None, tx=None, mesh=sharding.make_mesh(1, 1),
            config=classification.get_config(),
        )  # fmt: skip
        kwargs = {"every": 5} if batch_size is None else {"every": 5, "batch_size": batch_size}
        evaluation = PROBES.build("evaluation", kwargs)
        evaluation.setup(ctx)
        metrics, state = evaluation(ctx, 0, params, None, evaluation.init(ctx, params))
        norms, _ = PROBES.build("weight_norms", {"every": 5})(ctx, 0, params, None, {})
    assert state == {}
    for split, data in (("train", train), ("test", test)):
        loss, acc = _numpy_metrics(params, data["x"], data["y"])
        np.testing.assert_allclose(metrics[f"{split}_loss"], loss, rtol=1e-12)
        np.testing.assert_allclose(metrics[f"{split}_accuracy"], acc, rtol=1e-12)
    assert set(norms) == {"weight_norm/Dense_0/kernel", "weight_norm/Dense_0/bias"}
    for leaf in ("kernel", "bias"):
        expected = np.linalg.norm(params["Dense_0"][leaf])
        np.testing.assert_allclose(norms[f"weight_norm/Dense_0/{leaf}"], expected, rtol=1e-12)
