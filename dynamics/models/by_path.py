"""A user's own Flax linen module, named in a config by import path: ``model.name =
"my_pkg.nets:ResNet"``.

The other fields of the ``model`` section are the module's constructor keywords (its dataclass
fields), checked by name before anything is built. Fields the dataset determines are filled in when
the module declares them and the config leaves them out: ``num_outputs`` from
``spec.num_outputs``, ``vocab_size`` from ``spec.vocab_size``. The module is called as
``module.apply({"params": params}, x)`` (:func:`dynamics.models.from_linen`); its output must fit
the loss, which the runner checks by tracing one example before compiling. A module that creates
collections besides ``params`` (BatchNorm statistics) is refused, since the train state holds
parameters only.

An import path may also name a function ``fn(spec, **kwargs) -> Model``, the convention of the
registered constructors.

Example:
  >>> import flax.linen as nn, jax, jax.numpy as jnp
  >>> from dynamics.data import DataSpec
  >>> class Linear(nn.Module):
  ...     num_outputs: int
  ...     @nn.compact
  ...     def __call__(self, x):
  ...         return nn.Dense(self.num_outputs)(x)
  >>> build = from_module(Linear, "doc:Linear", "model")
  >>> model = build(DataSpec((4,), "float32", 3))
  >>> model.apply(model.init(jax.random.key(0), jnp.zeros((1, 4))), jnp.ones((2, 4))).shape
  (2, 3)
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import flax.linen as nn

from dynamics.registry import ConfigError

# Module fields filled from the dataset spec when a config leaves them out.
FROM_SPEC = ("num_outputs", "vocab_size")
_FLAX_FIELDS = ("parent", "name")


def from_module(obj: Any, name: str, where: str):
    """A constructor ``build(spec, **fields) -> Model`` for the linen module class ``obj``."""
    from dynamics.models import from_linen

    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        if callable(obj) and not isinstance(obj, type):
            return obj
        raise ConfigError(
            f"{where}.name {name!r} is not a flax.linen Module class or a function "
            "fn(spec, **kwargs) -> Model"
        )
    fields = [f for f in dataclasses.fields(obj) if f.init and f.name not in _FLAX_FIELDS]
    required = [
        f.name
        for f in fields
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]

    def build(spec, **kwargs):
        for field in FROM_SPEC:
            if field in required and field not in kwargs and getattr(spec, field) is not None:
                kwargs[field] = getattr(spec, field)
        missing = [f for f in required if f not in kwargs]
        if missing:
            raise ConfigError(
                f"missing field {where}.{missing[0]} for {name}; its fields: "
                + ", ".join(f.name for f in fields)
            )
        return from_linen(obj(**kwargs))

    params = [inspect.Parameter("spec", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    params += [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY) for f in fields]
    build.__signature__ = inspect.Signature(params)
    build.__name__ = build.__qualname__ = obj.__name__
    build.__doc__ = obj.__doc__
    return build
