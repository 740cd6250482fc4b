"""A user's own Flax module, ``flax.linen`` or ``flax.nnx``, named in a config by import path:
``model.name = "my_pkg.nets:ResNet"``.

The other fields of the ``model`` section are the module's constructor keywords (its dataclass
fields), checked by name before anything is built. Fields the dataset determines are filled in when
the module declares them and the config leaves them out: ``num_outputs`` from
``spec.num_outputs``, ``vocab_size`` from ``spec.vocab_size``. The module is called as
``module.apply({"params": params}, x)`` (:func:`dynamics.models.from_linen`); its output must fit
the loss, which the runner checks by tracing one example before compiling. A module that creates
collections besides ``params`` (BatchNorm statistics) is refused, since the train state holds
parameters only.

An ``nnx.Module`` class is built the same way from its ``__init__`` keywords (all but ``rngs``,
which :func:`from_nnx` passes as ``nnx.Rngs(params=rng)``): ``init`` constructs it and returns the
plain dict of its ``nnx.Param`` values; ``apply`` merges that dict into the module's graph and
calls it. A module holding other state (``nnx.BatchStat``, a stored ``nnx.Rngs`` for dropout) is
refused like a linen module with collections.

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
import jax
import jax.numpy as jnp
from flax import nnx

from dynamics.registry import ConfigError

# Module fields filled from the dataset spec when a config leaves them out.
FROM_SPEC = ("num_outputs", "vocab_size")
_FLAX_FIELDS = ("parent", "name")


def _fill_from_spec(spec, kwargs: dict, required: list[str]) -> dict:
    for field in FROM_SPEC:
        if field in required and field not in kwargs and getattr(spec, field) is not None:
            kwargs[field] = getattr(spec, field)
    return kwargs


def _check_missing(kwargs, required, fields, name, where) -> None:
    missing = [f for f in required if f not in kwargs]
    if missing:
        raise ConfigError(
            f"missing field {where}.{missing[0]} for {name}; its fields: " + ", ".join(fields)
        )


def _keyword_signature(fields: list[str]) -> inspect.Signature:
    params = [inspect.Parameter("spec", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    params += [inspect.Parameter(f, inspect.Parameter.KEYWORD_ONLY) for f in fields]
    return inspect.Signature(params)


def from_nnx(cls: type, kwargs: dict, name: str):
    """``Model(init, apply)`` over the plain ``nnx.Param`` dict of ``cls(**kwargs, rngs=...)``."""
    from dynamics.models import Model

    # The graph and the parameter shapes, traced without allocating or compiling.
    abstract = nnx.eval_shape(lambda: cls(**kwargs, rngs=nnx.Rngs(0)))
    graphdef, abstract_params, rest = nnx.split(abstract, nnx.Param, ...)
    others = nnx.to_flat_state(rest)
    if others:
        kinds = sorted({type(v).__name__ for _, v in others})
        raise ConfigError(
            f"model {name!r} holds state besides nnx.Param ({', '.join(kinds)}); the train state "
            "holds parameters only (no BatchNorm statistics or dropout RNGs yet)"
        )

    def init(rng, x):
        del x
        dtype = jnp.result_type(float)
        module = cls(**kwargs, rngs=nnx.Rngs(params=rng))
        params = nnx.to_pure_dict(nnx.state(module, nnx.Param))
        return jax.tree.map(
            lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, params
        )

    def apply(params, x):
        state = jax.tree.map(lambda a: a, abstract_params)
        nnx.replace_by_pure_dict(state, params)
        return nnx.merge(graphdef, state)(x)

    return Model(jax.jit(init), apply)


def from_module(obj: Any, name: str, where: str):
    """A constructor ``build(spec, **fields) -> Model`` for the module class ``obj``."""
    from dynamics.models import from_linen

    if isinstance(obj, type) and issubclass(obj, nnx.Module):
        params = list(inspect.signature(obj.__init__).parameters.values())[1:]
        fields = [
            p.name
            for p in params
            if p.name != "rngs"
            and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        ]
        required = [p.name for p in params if p.name in fields and p.default is p.empty]

        def build_nnx(spec, **kwargs):
            kwargs = _fill_from_spec(spec, kwargs, required)
            _check_missing(kwargs, required, fields, name, where)
            return from_nnx(obj, kwargs, name)

        build_nnx.__signature__ = _keyword_signature(fields)
        build_nnx.__name__ = build_nnx.__qualname__ = obj.__name__
        return build_nnx
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

    names = [f.name for f in fields]

    def build(spec, **kwargs):
        kwargs = _fill_from_spec(spec, kwargs, required)
        _check_missing(kwargs, required, names, name, where)
        return from_linen(obj(**kwargs))

    build.__signature__ = _keyword_signature(names)
    build.__name__ = build.__qualname__ = obj.__name__
    build.__doc__ = obj.__doc__
    return build
