"""Optimizers, schedules and models named by import path ``module:attribute``: how they are
wired (the learning rate, the dataset's sizes) and their one-line config errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from dynamics.data import DataSpec
from dynamics.models import MODELS, build_model
from dynamics.optim import OPTIMIZERS
from dynamics.optim.registry import preconditioner, sharpness_threshold
from dynamics.registry import ConfigError
from dynamics.train.schedules import SCHEDULES


class Affine(nn.Module):
    num_outputs: int
    scale: float = 1.0

    @nn.compact
    def __call__(self, x):
        return self.scale * nn.Dense(self.num_outputs)(x)


class WithBatchNorm(nn.Module):
    num_outputs: int

    @nn.compact
    def __call__(self, x):
        return nn.Dense(self.num_outputs)(nn.BatchNorm(use_running_average=True)(x))


def test_optax_optimizer_by_path_is_the_optax_rule():
    params = {"w": jnp.arange(4.0)}
    grads = {"w": jnp.asarray([1.0, -2.0, 0.5, 0.0])}
    ours = OPTIMIZERS.build("optax:lion", {"learning_rate": 0.1, "b1": 0.5}, "optimizer")
    ref = optax.lion(0.1, b1=0.5)
    u1, _ = ours.update(grads, ours.init(params), params)
    u2, _ = ref.update(grads, ref.init(params), params)
    np.testing.assert_array_equal(u1["w"], u2["w"])
    # No table row: no threshold and no preconditioner reader, rather than a KeyError.
    assert sharpness_threshold({"name": "optax:lion"}, 0.1) is None
    assert preconditioner({"name": "optax:lion"}) is None
    assert OPTIMIZERS.names() == sorted(n for n in OPTIMIZERS.names() if ":" not in n)


def test_optax_schedule_by_path_takes_the_peak_and_num_steps():
    kwargs = {"learning_rate": 2.0, "num_steps": 50, "init_value": 0.5, "warmup_steps": 10}
    lr = SCHEDULES.build("optax:warmup_cosine_decay_schedule", kwargs, "optimizer.schedule")
    for t in (0, 5, 10, 30, 50):
        warm = 0.5 + (2.0 - 0.5) * t / 10
        cos = 2.0 * 0.5 * (1 + np.cos(np.pi * (t - 10) / 40))
        np.testing.assert_allclose(float(lr(t)), warm if t < 10 else cos, rtol=1e-6, atol=1e-7)
    cosine = SCHEDULES.build("optax:cosine_decay_schedule", {"learning_rate": 3.0, "num_steps": 8})
    np.testing.assert_allclose(float(cosine(4)), 1.5, rtol=1e-6)


@pytest.mark.parametrize(
    "registry,name,kwargs,message",
    [
        (SCHEDULES, "optax:warmup_cosine_decay_schedule", {"peak_value": 1.0},
         "unknown field optimizer.schedule.peak_value"),
        (SCHEDULES, "optax:warmup_cosine_decay_schedule", {"warmup_steps": 1},
         "missing field optimizer.schedule.init_value"),
        (SCHEDULES, "optax:sgd", {}, "is not a schedule constructor"),
        (OPTIMIZERS, "optax:scale_by_adam", {}, "is not an optimizer alias taking learning_rate"),
        (OPTIMIZERS, "optax:lion", {"beta": 1}, "unknown field optimizer.beta for lion"),
        (OPTIMIZERS, "optax:no_such_rule", {}, "module 'optax' has no attribute 'no_such_rule'"),
        (OPTIMIZERS, "no_such_package.x:y", {}, "No module named 'no_such_package'"),
    ],
)  # fmt: skip
def test_by_path_errors_are_one_line_config_errors(registry, name, kwargs, message):
    where = "optimizer.schedule" if registry is SCHEDULES else "optimizer"
    base = {"learning_rate": 0.1, "num_steps": 10} if registry is SCHEDULES else {}
    with pytest.raises(ConfigError, match=message) as e:
        registry.build(name, {**base, **kwargs}, where)
    assert "\n" not in str(e.value)


def test_linen_module_by_path_gets_its_fields_and_the_dataset_sizes():
    spec = DataSpec((3,), "float32", 2)
    model = build_model({"name": f"{__name__}:Affine", "scale": 0.0}, spec)
    params = model.init(jax.random.key(0), jnp.zeros((1, 3)))
    assert params["Dense_0"]["kernel"].shape == (3, 2)  # num_outputs from the spec
    np.testing.assert_array_equal(model.apply(params, jnp.ones((4, 3))), np.zeros((4, 2)))
    with pytest.raises(ConfigError, match="unknown field model.depth for Affine; valid fields"):
        build_model({"name": f"{__name__}:Affine", "depth": 2}, spec)
    with pytest.raises(ConfigError, match="not a flax.linen Module class"):
        build_model({"name": "numpy:pi"}, spec)
    with pytest.raises(ConfigError, match="collection\\(s\\) batch_stats besides params"):
        bn = build_model({"name": f"{__name__}:WithBatchNorm"}, spec)
        bn.init(jax.random.key(0), jnp.zeros((1, 3)))
    with pytest.raises(ConfigError, match="or an import path module:attribute"):
        MODELS.get("resnet50", where="model")


class NnxMLP(nnx.Module):
    def __init__(self, din: int, num_outputs: int, width: int = 8, *, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(din, width, rngs=rngs)
        self.out = nnx.Linear(width, num_outputs, rngs=rngs)

    def __call__(self, x):
        return self.out(jnp.tanh(self.hidden(x)))


class NnxBatchNorm(nnx.Module):
    def __init__(self, din: int, *, rngs: nnx.Rngs):
        self.bn = nnx.BatchNorm(din, rngs=rngs)

    def __call__(self, x):
        return self.bn(x)


def test_nnx_module_by_path_is_a_pure_function_of_its_param_dict():
    spec = DataSpec((4,), "float32", 3)
    model = build_model({"name": f"{__name__}:NnxMLP", "din": 4, "width": 5}, spec)
    x = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    params = model.init(jax.random.key(0), x)
    assert type(params) is dict and params["hidden"]["kernel"].shape == (4, 5)
    assert params["out"]["kernel"].shape == (5, 3)  # num_outputs from the spec
    p = jax.tree.map(np.asarray, params)
    h = np.tanh(x @ p["hidden"]["kernel"] + p["hidden"]["bias"])
    expected = h @ p["out"]["kernel"] + p["out"]["bias"]
    np.testing.assert_allclose(jax.jit(model.apply)(params, x), expected, rtol=1e-5, atol=1e-6)
    # Another seed, other parameters; the same graph.
    other = model.init(jax.random.key(1), x)
    assert not np.allclose(other["hidden"]["kernel"], params["hidden"]["kernel"])
    with pytest.raises(ConfigError, match="missing field model.din for .*NnxMLP"):
        build_model({"name": f"{__name__}:NnxMLP"}, spec)
    with pytest.raises(ConfigError, match=r"holds state besides nnx.Param \(BatchStat\)"):
        build_model({"name": f"{__name__}:NnxBatchNorm", "din": 4}, spec)
