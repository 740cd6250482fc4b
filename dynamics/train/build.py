"""From a validated config to the pieces of a run, before anything compiles.

:func:`build` turns a validated config into a :class:`Run` (dataset, model, loss, learning-rate
schedule, optimizer, probes) without compiling anything, so every remaining config error (a
dataset file missing, a model that does not fit the data, a batch larger than the training set)
surfaces as a :class:`dynamics.registry.ConfigError` before a run directory exists;
:func:`dynamics.train.loop.train` runs it. :func:`build_optimizer` is the one place config names
become optax transforms (``FILTERS -> OPTIMIZERS -> CONSTRAINTS``, with extra-argument support).

Example:
  >>> from dynamics.train.config import base_config
  >>> run = build(base_config())
  >>> sorted(run.probes), run.dataset.train["x"].shape
  (['evaluation'], (1438, 64))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from dynamics.data import Dataset, load_dataset
from dynamics.losses import LOSSES
from dynamics.models import Model, build_model
from dynamics.optim import CONSTRAINTS, FILTERS, OPTIMIZERS
from dynamics.registry import ConfigError
from dynamics.train.config import evaluation_every, section_kwargs
from dynamics.train.probes import PROBES, Probe
from dynamics.train.schedules import SCHEDULES


@dataclasses.dataclass
class Run:
    """Everything a run is made of, built from its config before anything compiles."""

    config: ml_collections.ConfigDict
    dataset: Dataset
    model: Model
    per_example_loss: Callable
    learning_rate: optax.Schedule
    tx: optax.GradientTransformationExtraArgs
    probes: dict[str, Probe]


def float_dtype(config) -> Any:
    return np.float64 if config.precision == "float64" else np.float32


def _cast_split(split: dict | None, dtype) -> dict | None:
    """Floating arrays of a dataset split to the run's precision; tokens and labels unchanged."""
    if split is None:
        return None
    return {
        k: v.astype(dtype) if np.issubdtype(v.dtype, np.floating) else v for k, v in split.items()
    }


def cast_params(params, dtype):
    return jax.tree.map(
        lambda p: p.astype(dtype) if jnp.issubdtype(p.dtype, jnp.floating) else p, params
    )


def build_optimizer(config, learning_rate) -> optax.GradientTransformationExtraArgs:
    """``with_extra_args_support(chain(filter, optimizer, constraint))`` of ``config.optimizer``."""
    opt = config.optimizer
    parts = []
    if opt.filter.name is not None:
        parts.append(
            FILTERS.build(
                opt.filter.name, section_kwargs(config, "optimizer.filter"), "optimizer.filter"
            )
        )
    kwargs = {"learning_rate": learning_rate, **section_kwargs(config, "optimizer")}
    parts.append(OPTIMIZERS.build(opt.name, kwargs, "optimizer"))
    if opt.constraint.name is not None:
        parts.append(
            CONSTRAINTS.build(
                opt.constraint.name,
                section_kwargs(config, "optimizer.constraint"),
                "optimizer.constraint",
            )
        )
    return optax.with_extra_args_support(optax.chain(*parts))


def build(config: ml_collections.ConfigDict) -> Run:
    """Builds the pieces of a validated config; raises ConfigError for what only they can tell."""
    with jax.enable_x64(config.precision == "float64"):
        dataset = load_dataset(
            {"name": config.data.name, **section_kwargs(config, "data")}, config.seed
        )
        dtype = float_dtype(config)
        dataset = dataset._replace(
            train=_cast_split(dataset.train, dtype), test=_cast_split(dataset.test, dtype)
        )
        num_train = len(dataset.train["y"])
        batch_size = config.data.batch_size
        if batch_size and batch_size > num_train:
            raise ConfigError(
                f"data.batch_size = {batch_size} is larger than the {num_train} training examples"
            )
        if not batch_size and num_train % config.mesh.data:
            raise ConfigError(
                f"full-batch training on {num_train} examples is not divisible by mesh.data = "
                f"{config.mesh.data}; set data.batch_size to a multiple of mesh.data"
            )
        model = build_model(
            {"name": config.model.name, **section_kwargs(config, "model")}, dataset.spec
        )
        per_example_loss = LOSSES.build(config.loss.name, section_kwargs(config, "loss"), "loss")
        schedule_kwargs = {
            "learning_rate": config.optimizer.learning_rate,
            "num_steps": config.num_steps,
            **section_kwargs(config, "optimizer.schedule"),
        }
        learning_rate = SCHEDULES.build(
            config.optimizer.schedule.name, schedule_kwargs, "optimizer.schedule"
        )
        tx = build_optimizer(config, learning_rate)
        probes = {
            name: PROBES.build(name, section_kwargs(config, f"probes.{name}"), f"probes.{name}")
            for name in config.probes
            if name != "evaluation"
        }
        # Every 0: only at step 0 and at the end (the last step always evaluates).
        evaluation = (
            section_kwargs(config, "probes.evaluation") if "evaluation" in config.probes else {}
        )
        evaluation["every"] = evaluation_every(config) or config.num_steps
        probes["evaluation"] = PROBES.build("evaluation", evaluation, "probes.evaluation")
        for probe in probes.values():
            probe.check(config)
        _check_shapes(config, dataset, model, per_example_loss)
    return Run(config, dataset, model, per_example_loss, learning_rate, tx, probes)


def _check_shapes(config, dataset, model, per_example_loss) -> None:
    """Traces init, forward and loss on one example (no compilation) to catch shape mismatches."""
    x = dataset.train["x"][:1]
    y = dataset.train["y"][:1]

    def loss_of_init(key):
        params = model.init(key, x)
        return per_example_loss(model.apply(params, x), y)

    try:
        out = jax.eval_shape(loss_of_init, jax.random.key(0))
    except (TypeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f"model {config.model.name!r} and loss {config.loss.name!r} do not fit dataset "
            f"{config.data.name!r}: {first}"
        ) from e
    if out.shape != (1,):
        raise ConfigError(
            f"loss {config.loss.name!r} returned shape {out.shape} for one example, expected (1,)"
        )
