"""The table of every update rule a config can name, with what the rest of the code needs to know.

The runner composes three kinds of optax transforms as ``chain(filter, optimizer, constraint)``:

* optimizers, called as ``build(learning_rate, **kwargs)`` where ``learning_rate`` is a float or an
  optax schedule (the optax alias convention);
* filters, gradient transforms applied before the optimizer (Grokfast, orthogonal gradient,
  sharpness-aware perturbations), called as ``build(**kwargs)``;
* constraints, transforms applied after the optimizer that keep the parameters in a set
  (spectral normalization and caps), called as ``build(**kwargs)``.

Each row of :data:`TABLE` is a :class:`Component`: the constructor and its metadata,

* ``sharpness_threshold``: the linear-stability threshold on the top Hessian eigenvalue, as a
  function of the constructor's keyword arguments (defaults filled in) and the learning rate.
  Optimizers: ``f(kwargs, lr)`` (GD ``2/lr``, heavy ball ``(2 + 2b)/lr``, Nesterov
  ``(2 + 2b)/(lr (1 + 2b))``, unnormalized SAM on GD ``(sqrt(1 + 8 rho/lr) - 1)/(2 rho)``);
  filters: ``f(kwargs, lr, base)`` with ``base = (name, kwargs)`` the optimizer they precede.
  None where no closed form is known; a constraint in the chain voids every threshold;
* ``preconditioner``: ``f(kwargs) -> Preconditioner`` reading ``P`` from the optimizer state, for
  the preconditioned sharpness ``lambda_max(P^-1/2 H P^-1/2)`` (Cohen et al. 2022), with that
  quantity's threshold;
* ``extra_args``: the keyword extra arguments its ``update`` reads (``grad_fn(params) ->
  grads``, the gradient of the current batch at other parameters; ``loss``, that batch's mean
  loss). The runner always passes both.

:func:`sharpness_threshold` and :func:`preconditioner` answer for a whole config section
(``{"name": ..., **kwargs, "filter": {...}, "constraint": {...}}``), so the probes and the
analyses never re-derive an optimizer from its name. The registries ``OPTIMIZERS``,
``FILTERS`` and ``CONSTRAINTS`` (:class:`dynamics.registry.Registry`, with their one-line config
errors) are built from the table, and also take any optax-style alias by import path
(``"optax:lion"``, ``"optax.contrib:schedule_free_adamw"``, ``"my_pkg.rules:my_rule"``): a
function with a ``learning_rate`` parameter returning a ``GradientTransformation``, called as the
registered ones (the schedule as ``learning_rate``, the other fields as keywords checked against
its signature). Such a rule has no table row: no known threshold and no preconditioner reader.
This is the one module of :mod:`dynamics.optim` that knows
about names and configs; the rules themselves depend on jax, optax and chex only, and config
names are resolved here (``optimizer.base`` of the sharpness-aware entries).

Example:
  >>> round(sharpness_threshold({"name": "momentum", "momentum": 0.5}, learning_rate=0.1), 6)
  30.0
  >>> TABLE["optimizer"]["sam"].extra_args
  ('grad_fn', 'loss')
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import optax

from dynamics.curvature import preconditioned, thresholds
from dynamics.optim import baselines, constraints, filters, sharpness_aware
from dynamics.optim.adago import adago
from dynamics.optim.adamuon import adamuon
from dynamics.optim.auon import auon, auon_hybrid
from dynamics.optim.conda import conda
from dynamics.optim.muon import muon
from dynamics.optim.normuon import normuon
from dynamics.optim.partition import adamw_fallback
from dynamics.optim.psgd_kron import kron
from dynamics.optim.scion import scion
from dynamics.optim.shampoo import shampoo
from dynamics.optim.soap import soap
from dynamics.optim.splus import splus
from dynamics.registry import ConfigError, Registry

# Keys of an optimizer config section that are not constructor arguments.
RESERVED = ("name", "learning_rate", "schedule", "filter", "constraint")
SHARPNESS_AWARE = ("grad_fn", "loss")


class Preconditioner(NamedTuple):
    """How to read an adaptive rule's preconditioner and the threshold of the preconditioned
    sharpness: ``read(opt_state) -> P`` (a tree like the parameters), ``threshold(lr)``."""

    read: Callable[[Any], Any]
    threshold: Callable[[float], float]


@dataclasses.dataclass(frozen=True)
class Component:
    """One row of the table (module doc)."""

    build: Callable[..., optax.GradientTransformation]
    sharpness_threshold: Callable[..., float | None] | None = None
    preconditioner: Callable[[dict[str, Any]], Preconditioner] | None = None
    extra_args: tuple[str, ...] = ()


def _plain(value: Any) -> Any:
    """A config value as plain Python (ConfigDicts to dicts)."""
    return value.to_dict() if hasattr(value, "to_dict") else value


def _name_and_kwargs(base: str | Mapping[str, Any], where: str) -> tuple[str, dict[str, Any]]:
    if isinstance(base, str):
        return base, {}
    kwargs = dict(_plain(base))
    if "name" not in kwargs:
        raise ConfigError(f"{where} needs a name; valid choices: {OPTIMIZERS.names()}")
    return kwargs.pop("name"), kwargs


def base_optimizer(learning_rate, base: str | Mapping[str, Any]) -> optax.GradientTransformation:
    """The registered optimizer ``base`` (a name or ``{"name": ..., **kwargs}``) at
    ``learning_rate``; the config path of its fields is ``optimizer.base``."""
    name, kwargs = _name_and_kwargs(base, "optimizer.base")
    if "learning_rate" in kwargs:
        raise ConfigError("optimizer.base.learning_rate: set optimizer.learning_rate instead")
    return OPTIMIZERS.build(name, {"learning_rate": learning_rate, **kwargs}, "optimizer.base")


def with_named_base(rule: Callable[..., Any]) -> Callable[..., Any]:
    """The config-facing constructor of a rule that takes its base optimizer as a transform
    (:func:`dynamics.optim.sharpness_aware.sam`, ``asam``, ``gradient_norm_regularization``):
    ``build(learning_rate, *, base="sgd", **the rule's keyword arguments)``, where ``base`` is a
    registered optimizer name or ``{"name": ..., **its kwargs}`` (in a config,
    ``optimizer.base.name`` and ``optimizer.base.<kwarg>``; weight decay belongs there).

    The signature is spelled out for :func:`dynamics.registry.check_kwargs`.
    """
    signature = inspect.signature(rule)
    params = [p for n, p in signature.parameters.items() if n != "base_optimizer"]
    learning_rate = inspect.Parameter("learning_rate", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    base = inspect.Parameter("base", inspect.Parameter.KEYWORD_ONLY, default="sgd")

    def build(learning_rate, *, base="sgd", **kwargs):
        return rule(base_optimizer(learning_rate, base), **kwargs)

    build.__signature__ = signature.replace(parameters=[learning_rate, base, *params])
    build.__name__ = build.__qualname__ = rule.__name__
    build.__doc__ = rule.__doc__
    return build


def with_adamw_fallback(alias: Callable[..., Any]) -> Callable[..., Any]:
    """The config-facing constructor of a matrix rule whose alias takes ``fallback=`` (the
    transform for non-matrix leaves): the alias's keyword arguments, with ``fallback`` replaced by
    the AdamW fields ``adam_learning_rate`` (None: the rule's), ``adam_b1``, ``adam_b2``,
    ``adam_eps`` and ``adam_weight_decay`` of :func:`dynamics.optim.partition.adamw_fallback`.

    The signature is spelled out for :func:`dynamics.registry.check_kwargs` (and
    ``optax.inject_hyperparams``), so a config's unknown field still fails by name.
    """
    adam = {
        f"adam_{n}": p.replace(name=f"adam_{n}", kind=inspect.Parameter.KEYWORD_ONLY)
        for n, p in inspect.signature(adamw_fallback).parameters.items()
    }
    adam["adam_learning_rate"] = adam["adam_learning_rate"].replace(default=None)
    signature = inspect.signature(alias)
    params = [p for n, p in signature.parameters.items() if n != "fallback"]

    def build(learning_rate, **kwargs):
        fields = {n[len("adam_") :]: kwargs.pop(n) for n in adam if n in kwargs}
        fallback_lr = fields.pop("learning_rate", None)
        fallback = adamw_fallback(learning_rate if fallback_lr is None else fallback_lr, **fields)
        return alias(learning_rate, fallback=fallback, **kwargs)

    build.__signature__ = signature.replace(parameters=[*params, *adam.values()])
    build.__name__ = build.__qualname__ = alias.__name__
    build.__doc__ = alias.__doc__
    return build


# ----------------------------------------------------------------------------- metadata
def _gd(kwargs, lr):
    return thresholds.gd_threshold(lr)


def _heavy_ball(kwargs, lr):
    return thresholds.momentum_threshold(lr, kwargs["momentum"])


def _nesterov(kwargs, lr):
    return thresholds.nesterov_threshold(lr, kwargs["momentum"])


def _is_plain_sgd(name: str, kwargs: Mapping[str, Any]) -> bool:
    return name == "sgd" and not kwargs


def _unnormalized_sam_on_gd(kwargs, lr, base):
    """Agarwala & Dauphin (2023): unnormalized SAM on plain GD; no closed form otherwise."""
    if kwargs["normalize"] or not _is_plain_sgd(*base):
        return None
    return thresholds.unnormalized_sam_threshold(lr, kwargs["rho"])


def _sam_optimizer_threshold(kwargs, lr):
    return _unnormalized_sam_on_gd(kwargs, lr, _name_and_kwargs(kwargs["base"], "optimizer.base"))


def _adam_preconditioner(kwargs):
    return Preconditioner(
        read=lambda s: preconditioned.adam_preconditioner(s, b2=kwargs["b2"], eps=kwargs["eps"]),
        threshold=lambda lr: thresholds.adam_threshold(lr, kwargs["b1"]),
    )


def _rmsprop_preconditioner(kwargs):
    return Preconditioner(
        read=lambda s: preconditioned.rmsprop_preconditioner(s, eps=kwargs["eps"]),
        threshold=thresholds.gd_threshold,
    )


# -------------------------------------------------------------------------------- table
TABLE: dict[str, dict[str, Component]] = {
    "optimizer": {
        "sgd": Component(baselines.sgd, sharpness_threshold=_gd),
        "momentum": Component(baselines.momentum, sharpness_threshold=_heavy_ball),
        "nesterov": Component(baselines.nesterov, sharpness_threshold=_nesterov),
        "adam": Component(baselines.adam, preconditioner=_adam_preconditioner),
        "adamw": Component(baselines.adamw, preconditioner=_adam_preconditioner),
        "rmsprop": Component(baselines.rmsprop, preconditioner=_rmsprop_preconditioner),
        "sam": Component(
            with_named_base(sharpness_aware.sam),
            sharpness_threshold=_sam_optimizer_threshold,
            extra_args=SHARPNESS_AWARE,
        ),
        "asam": Component(with_named_base(sharpness_aware.asam), extra_args=SHARPNESS_AWARE),
        "gradient_norm_regularization": Component(
            with_named_base(sharpness_aware.gradient_norm_regularization),
            extra_args=SHARPNESS_AWARE,
        ),
        "muon": Component(with_adamw_fallback(muon)),
        "adamuon": Component(with_adamw_fallback(adamuon)),
        "normuon": Component(with_adamw_fallback(normuon)),
        "adago": Component(with_adamw_fallback(adago)),
        "auon": Component(with_adamw_fallback(auon)),
        "auon_hybrid": Component(with_adamw_fallback(auon_hybrid)),
        "scion": Component(with_adamw_fallback(scion)),
        "conda": Component(conda),
        "shampoo": Component(shampoo),
        "soap": Component(soap),
        "splus": Component(splus),
        "kron": Component(kron),
    },
    "filter": {
        "grokfast_ema": Component(filters.grokfast_ema),
        "grokfast_ma": Component(filters.grokfast_ma),
        "orthogonal_gradient": Component(filters.orthogonal_gradient),
        "sam": Component(
            sharpness_aware.scale_by_sam,
            sharpness_threshold=_unnormalized_sam_on_gd,
            extra_args=SHARPNESS_AWARE,
        ),
        "asam": Component(sharpness_aware.scale_by_asam, extra_args=SHARPNESS_AWARE),
        "gradient_norm_regularization": Component(
            sharpness_aware.scale_by_gradient_norm_regularization, extra_args=SHARPNESS_AWARE
        ),
        "sharpness_aware": Component(
            sharpness_aware.scale_by_sharpness_aware, extra_args=SHARPNESS_AWARE
        ),
    },
    "constraint": {
        "spectral_normalize": Component(constraints.spectral_normalize),
        "spectral_cap": Component(constraints.spectral_cap),
        "spectral_hammer": Component(constraints.spectral_hammer),
        "spectral_weight_decay": Component(constraints.spectral_weight_decay),
    },
}


def optimizer_by_path(obj: Any, name: str, where: str) -> Callable[..., Any]:
    """The constructor of the optax-style alias ``obj`` an import path ``name`` names."""
    try:
        params = inspect.signature(obj).parameters
    except (TypeError, ValueError):
        params = {}
    if not callable(obj) or "learning_rate" not in params:
        raise ConfigError(
            f"{where}.name {name!r} is not an optimizer alias taking learning_rate "
            "(e.g. optax:adamw, optax:lion, optax.contrib:schedule_free_adamw)"
        )

    @functools.wraps(obj)
    def build(*args, **kwargs):
        tx = obj(*args, **kwargs)
        if not isinstance(tx, optax.GradientTransformation):
            raise ConfigError(
                f"{where}.name {name!r} returned {type(tx).__name__}, not an optax "
                "GradientTransformation"
            )
        return tx

    return build


def _registry(kind: str, label: str, by_path=None) -> Registry:
    registry = Registry(label, by_path=by_path)
    for name, component in TABLE[kind].items():
        registry.register(name, component.build)
    return registry


OPTIMIZERS: Registry = _registry("optimizer", "optimizer", by_path=optimizer_by_path)
FILTERS: Registry = _registry("filter", "gradient filter")
CONSTRAINTS: Registry = _registry("constraint", "constraint")


# ---------------------------------------------------------------------- queries on a section
def with_defaults(build: Callable[..., Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments ``build`` runs with: its defaults updated by ``kwargs``."""
    out = {
        n: p.default
        for n, p in inspect.signature(build).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    out.update(kwargs)
    return out


def _entry(section: Mapping[str, Any] | None) -> tuple[str, dict[str, Any]] | None:
    """``(name, explicit kwargs)`` of a config section, None when it names nothing."""
    section = _plain(section) or {}
    name = section.get("name")
    if name is None:
        return None
    return name, {k: _plain(v) for k, v in section.items() if k not in RESERVED}


def sharpness_threshold(optimizer: Mapping[str, Any], learning_rate: float) -> float | None:
    """The stability threshold on the top Hessian eigenvalue of the chain an optimizer section
    builds (``filter -> optimizer -> constraint``), or None where none is known.

    Args:
      optimizer: the ``optimizer`` config section: ``name``, its keyword arguments, and
        optionally ``filter.{name, ...}`` and ``constraint.{name, ...}``.
      learning_rate: the learning rate at the step of the measurement.
    """
    optimizer = _plain(optimizer)
    name, kwargs = _entry(optimizer)
    if _entry(optimizer.get("constraint")) is not None:
        return None
    filter_entry = _entry(optimizer.get("filter"))
    if filter_entry is not None:
        component = TABLE["filter"][filter_entry[0]]
        if component.sharpness_threshold is None:
            return None
        f_kwargs = with_defaults(component.build, filter_entry[1])
        return component.sharpness_threshold(f_kwargs, learning_rate, (name, kwargs))
    component = TABLE["optimizer"].get(name)  # None for a rule named by import path
    if component is None or component.sharpness_threshold is None:
        return None
    return component.sharpness_threshold(with_defaults(component.build, kwargs), learning_rate)


def preconditioner(optimizer: Mapping[str, Any]) -> Preconditioner | None:
    """The preconditioner reader of an optimizer section's rule, None for a rule without one."""
    name, kwargs = _entry(optimizer)
    component = TABLE["optimizer"].get(name)
    if component is None or component.preconditioner is None:
        return None
    return component.preconditioner(with_defaults(component.build, kwargs))


def with_preconditioner() -> list[str]:
    """The optimizer names that have a preconditioner reader."""
    return [n for n, c in TABLE["optimizer"].items() if c.preconditioner is not None]
