"""Models as pairs of pure functions over a plain parameter pytree.

Every constructor is registered in ``MODELS`` as ``fn(spec: DataSpec, **kwargs) -> Model``:

* ``mlp``: fully connected network (widths, activation, bias on/off, Flax or PyTorch init).
* ``cnn``: convolutional network on NHWC images.
* ``transformer``: decoder-only transformer over token sequences, output at the last position.
* ``vgg11``, ``resnet`` (``depth`` 20, 32, ...): CIFAR networks (Simonyan & Zisserman 2015;
  He et al. 2016); ``vit``: ViT-tiny (Dosovitskiy et al. 2021).
* ``gpt``: decoder language model, tied embeddings, logits ``[batch, T, vocab]`` at every position.
* ``scalar_network``: ``f(x) = x * prod_i w_i`` (Kreisler et al. 2023).
* ``quadratic``: second-order regression model, quadratic in the parameters (Agarwala et al. 2023).

Any linen or nnx module by import path, ``model.name = "my_pkg.nets:ResNet"``, with its fields
as the other keys of ``model`` (:mod:`dynamics.models.by_path`).

Flax linen modules are used inside; outside, ``init(rng, x) -> params`` returns the plain dict
under ``"params"`` and ``apply(params, x) -> [batch, num_outputs]`` is pure. Parameters keep Flax's
names (``kernel``, ``bias``, ``embedding``, ``scale``) so matrix-aware code can tell weight
matrices (``kernel``, Flax layout ``(in, out)``) from vectors.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from dynamics.data import DataSpec
  >>> model = build_model({"name": "mlp", "widths": (16,)}, DataSpec((8,), "float32", 3))
  >>> params = model.init(jax.random.key(0), jnp.zeros((2, 8)))
  >>> model.apply(params, jnp.ones((5, 8))).shape
  (5, 3)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from dynamics.registry import ConfigError, Registry, check_kwargs


class Model(NamedTuple):
    """``init(rng, x) -> params`` and pure ``apply(params, x) -> outputs [batch, num_outputs]``.

    Floating parameters come in JAX's default float dtype: float32, or float64 under x64.
    """

    init: Callable[[jax.Array, jax.Array], Any]
    apply: Callable[[Any, jax.Array], jax.Array]


def _by_path(obj, name, where):
    from dynamics.models.by_path import from_module

    return from_module(obj, name, where)


MODELS: Registry = Registry("model", by_path=_by_path)

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "tanh": nn.tanh,
    "relu": nn.relu,
    # Exact (erf) GELU, as torch.nn.GELU(); "gelu_tanh" is the tanh approximation.
    "gelu": lambda x: nn.gelu(x, approximate=False),
    "gelu_tanh": lambda x: nn.gelu(x, approximate=True),
    "silu": nn.silu,
    "elu": nn.elu,
    "sigmoid": nn.sigmoid,
    "softplus": nn.softplus,
    "linear": lambda x: x,
}


def get_activation(name: str, where: str = "model.activation") -> Callable[[jax.Array], jax.Array]:
    """Looks up an activation by name, raising ConfigError with the choices."""
    if name not in ACTIVATIONS:
        raise ConfigError(f"unknown {where} {name!r}; valid choices: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def from_linen(module: nn.Module) -> Model:
    """Wraps a linen module so callers never see the ``{"params": ...}`` collection."""

    def init(rng, x):
        # Flax creates float32 parameters even under x64; use the default float dtype like the
        # non-Flax models, so a float64 run is float64 throughout.
        dtype = jnp.result_type(float)
        variables = module.init(rng, x)
        others = sorted(set(variables) - {"params"})
        if others:
            raise ConfigError(
                f"the model creates the collection(s) {', '.join(others)} besides params; the "
                "train state holds parameters only (no BatchNorm statistics yet)"
            )
        params = variables["params"]
        return jax.tree.map(
            lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, params
        )

    def apply(params, x):
        return module.apply({"params": params}, x)

    # One compiled initializer instead of hundreds of op-by-op dispatches.
    return Model(jax.jit(init), apply)


def refuse_batch_norm(batch_norm: bool, model: str) -> None:
    """Raises ConfigError for ``model.batch_norm=True``: the runner's train state holds parameters
    only, so BatchNorm statistics (a mutable collection) could not be updated or checkpointed.
    The linen modules themselves take ``batch_norm=True`` and ``train`` for use outside the runner.
    """
    if batch_norm:
        raise ConfigError(
            f"model.batch_norm=True: model {model!r} with BatchNorm needs mutable collections "
            "(running statistics) in the train state, which the runner does not keep yet; "
            "set model.batch_norm=False"
        )


def build_model(model_cfg: Mapping[str, Any], spec) -> Model:
    """Builds ``MODELS[model_cfg["name"]](spec, **rest)`` from a ``model`` config section."""
    if "name" not in model_cfg:
        raise ConfigError(f"missing field model.name; valid choices: {', '.join(MODELS.names())}")
    fn = MODELS.get(model_cfg["name"], where="model")
    kwargs = {k: v for k, v in model_cfg.items() if k != "name"}
    check_kwargs(fn, kwargs, "model")
    return fn(spec, **kwargs)


# The modules register themselves in MODELS, so they are imported after it exists.
from dynamics.models import (  # noqa: E402, F401
    cnn,
    gpt,
    mlp,
    quadratic,
    resnet,
    scalar,
    transformer,
    vgg,
    vit,
)
