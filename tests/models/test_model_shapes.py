"""Every model: output shapes, plain parameter pytrees with Flax names, config errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynamics.data import DataSpec
from dynamics.models import MODELS, build_model
from dynamics.registry import ConfigError

CASES = [
    ({"name": "mlp", "widths": (16, 8)}, DataSpec((6,), "float32", 3)),
    ({"name": "mlp", "widths": (), "use_bias": False}, DataSpec((2, 3), "float32", 4)),
    ({"name": "cnn", "channels": (4,), "dense": (8,)}, DataSpec((8, 8, 1), "float32", 10)),
    (
        {
            "name": "cnn",
            "channels": (4, 4),
            "dense": (),
            "pool": "max",
            "image_shape": (4, 4, 2),
            "channels_first": True,
        },
        DataSpec((32,), "float32", 5),
    ),
    (
        {"name": "transformer", "num_layers": 1, "d_model": 16, "num_heads": 2, "d_mlp": 32},
        DataSpec((4,), "int32", 7, vocab_size=9),
    ),
    (
        {
            "name": "transformer",
            "num_layers": 2,
            "d_model": 16,
            "num_heads": 4,
            "d_mlp": 64,
            "layer_norm": "grokfast",
            "init": "torch",
            "predict_vocab": True,
        },
        DataSpec((4,), "int32", 7, vocab_size=9),
    ),
    ({"name": "vgg11"}, DataSpec((32, 32, 3), "float32", 10)),
    (
        {"name": "resnet", "depth": 32, "image_shape": (32, 32, 3), "channels_first": True},
        DataSpec((3072,), "float32", 10),
    ),
    (
        {"name": "vit", "num_layers": 1, "d_model": 16, "num_heads": 2, "pool": "mean"},
        DataSpec((8, 8, 3), "float32", 4),
    ),
    ({"name": "scalar_network", "depth": 3}, DataSpec((1,), "float32", 1)),
    ({"name": "quadratic", "num_params": 12}, DataSpec((5,), "float32", 2)),
]


@pytest.mark.parametrize("cfg,spec", CASES, ids=[c["name"] for c, _ in CASES])
def test_shapes_and_plain_params(cfg, spec):
    # Shapes only, traced without compiling; values are checked against NumPy in the other tests.
    model = build_model(cfg, spec)
    x = jax.ShapeDtypeStruct((3, *spec.input_shape), jnp.dtype(spec.input_dtype))
    params = jax.eval_shape(model.init, jax.random.key(0), x)
    out = jax.eval_shape(model.apply, params, x)
    expected = spec.vocab_size if cfg.get("predict_vocab") else spec.num_outputs
    assert out.shape == (3, expected) and out.dtype == jnp.float32
    assert type(params) is dict and "params" not in params
    names = {p[-1].key for p, _ in jax.tree_util.tree_leaves_with_path(params)}
    if cfg["name"] in ("mlp", "cnn", "transformer", "vgg11", "resnet"):
        assert names <= {"kernel", "bias", "embedding", "scale"}
        assert ("bias" in names) == cfg.get("use_bias", True)


def test_mlp_torch_init_ranges_and_numpy_forward():
    spec = DataSpec((400,), "float32", 10)
    model = build_model({"name": "mlp", "widths": (300, 20), "init": "torch"}, spec)
    x = np.random.default_rng(0).standard_normal((4, 400)).astype(np.float32)
    p = jax.tree.map(np.asarray, model.init(jax.random.key(0), x))
    for layer, fan_in in (("Dense_0", 400), ("Dense_1", 300)):
        bound = 1 / np.sqrt(fan_in)  # torch.nn.Linear: kernel and bias U(+-1/sqrt(fan_in))
        for leaf in (p[layer]["kernel"], p[layer]["bias"]):
            assert np.abs(leaf).max() <= bound and np.abs(leaf).max() > 0.9 * bound
        np.testing.assert_allclose(np.var(p[layer]["kernel"]), bound**2 / 3, rtol=0.05)
    h = np.tanh(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
    h = np.tanh(h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"])
    expected = h @ p["Dense_2"]["kernel"] + p["Dense_2"]["bias"]
    np.testing.assert_allclose(model.apply(p, x), expected, rtol=1e-5, atol=1e-5)


def test_cnn_channels_first_reads_channel_major_vectors():
    images = np.random.default_rng(0).standard_normal((2, 4, 4, 3)).astype(np.float32)
    flat = images.transpose(0, 3, 1, 2).reshape(2, -1)  # CIFAR's channel-major layout
    kw = {"name": "cnn", "channels": (2,), "dense": ()}
    nhwc = build_model(kw, DataSpec((4, 4, 3), "float32", 3))
    chw = build_model(
        {**kw, "image_shape": (4, 4, 3), "channels_first": True}, DataSpec((48,), "float32", 3)
    )
    params = nhwc.init(jax.random.key(0), images)
    np.testing.assert_allclose(chw.apply(params, flat), nhwc.apply(params, images), rtol=1e-6)


def test_config_errors():
    spec = DataSpec((6,), "float32", 3)
    with pytest.raises(ConfigError, match="valid choices: cnn, gpt, mlp, quadratic, resnet"):
        build_model({"name": "resnet18"}, spec)
    with pytest.raises(ConfigError, match="unknown field model.depth"):
        build_model({"name": "mlp", "depth": 3}, spec)
    with pytest.raises(ConfigError, match="model.activation"):
        build_model({"name": "mlp", "activation": "swish2"}, spec)
    with pytest.raises(ConfigError, match="image_shape"):
        build_model({"name": "cnn"}, spec)
    with pytest.raises(ConfigError, match="tokens"):
        build_model({"name": "transformer"}, spec)
    with pytest.raises(ConfigError, match="num_outputs"):
        build_model({"name": "scalar_network"}, spec)
    assert set(MODELS.names()) == {
        *("cnn", "gpt", "mlp", "quadratic", "resnet", "scalar_network", "transformer"),
        *("vgg11", "vit"),
    }
