"""The training loop: build every piece from a config, then train with events between chunks.

:func:`build` turns a validated config into a :class:`Run` (dataset, model, loss, optimizer,
probes) without compiling anything, so every remaining config error (a dataset file missing, a
model that does not fit the data, a batch larger than the training set) surfaces as a
:class:`dynamics.registry.ConfigError` before a run directory exists. :func:`train` runs it.

The loop alternates a jitted chunk of optimizer steps (:func:`dynamics.train.step.make_multi_step`,
one compilation for every chunk length) with host *events* at the steps where something must
happen: a metrics record (``log_every``), a probe (``probes.<name>.every``; the full-dataset
``evaluation`` probe every ``eval_every``), a checkpoint (``checkpoint_every``) and the last step.
At step 0 the probes run on the initial parameters. Between events nothing crosses the host.

Resuming restores the last complete checkpoint (train state and probe states) and truncates
``metrics.jsonl`` to its step; minibatches are a pure function of ``(seed, step)``, so the resumed
run writes the same records as an uninterrupted one.

Example:
  >>> from dynamics.train.config import base_config, validate
  >>> config = base_config()
  >>> config.num_steps = 100
  >>> validate(config)
  >>> summary = train(build(config), "/tmp/digits-run")  # doctest: +SKIP
  >>> summary["status"]  # doctest: +SKIP
  'completed'
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm

from dynamics.data import Dataset, load_dataset
from dynamics.losses import LOSSES, accuracy
from dynamics.models import Model, build_model
from dynamics.optim import CONSTRAINTS, FILTERS, OPTIMIZERS
from dynamics.registry import ConfigError
from dynamics.train import checkpoint, metrics, sharding, step, summary
from dynamics.train.config import section_kwargs
from dynamics.train.probes import PROBES, Probe, ProbeContext
from dynamics.train.schedules import SCHEDULES
from dynamics.train.state import TrainState


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


def _float_dtype(config) -> Any:
    return np.float64 if config.precision == "float64" else np.float32


def _cast_split(split: dict | None, dtype) -> dict | None:
    """Floating arrays of a dataset split to the run's precision; tokens and labels unchanged."""
    if split is None:
        return None
    return {
        k: v.astype(dtype) if np.issubdtype(v.dtype, np.floating) else v for k, v in split.items()
    }


def _cast_params(params, dtype):
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
        dtype = _float_dtype(config)
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
        }
        if "evaluation" not in probes:
            # eval_every = 0: only at step 0 and at the end (the last step always evaluates).
            every = config.eval_every or config.num_steps
            probes["evaluation"] = PROBES.build("evaluation", {"every": every})
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


def _progress_enabled(config) -> bool:
    return bool(config.progress) and sys.stdout.isatty() and not os.environ.get("CI")


class _Schedule:
    """Which events fall on a step, and the next step with any."""

    def __init__(self, config, probes):
        self.num_steps = config.num_steps
        self.log_every = config.log_every
        self.checkpoint_every = config.checkpoint_every
        self.probes = probes
        self.intervals = [self.log_every]
        if self.checkpoint_every:
            self.intervals.append(self.checkpoint_every)

    def next_event(self, t: int) -> int:
        steps = [(t // k + 1) * k for k in self.intervals]
        steps += [p.next_due(t) for p in self.probes.values()]
        return min([*steps, self.num_steps])

    def log(self, t: int) -> bool:
        return t % self.log_every == 0 or t == self.num_steps

    def probes_due(self, t: int) -> list[str]:
        last = t == self.num_steps
        return [
            name for name, p in self.probes.items() if p.due(t) or (last and name == "evaluation")
        ]

    def checkpoint(self, t: int) -> bool:
        return bool(self.checkpoint_every) and t % self.checkpoint_every == 0


def train(
    run: Run, workdir, *, resume: bool = False, start_time: float | None = None
) -> dict[str, Any]:
    """Trains ``run`` in ``workdir`` and returns the summary also written to ``summary.json``.

    Args:
      run: from :func:`build`.
      workdir: the run directory (created if needed). The caller decides whether an existing one
        may be used (``experiments.run`` refuses non-empty ones unless resuming or overwriting).
      resume: continue from the last complete checkpoint in ``workdir`` if there is one.
      start_time: ``time.perf_counter()`` at process start, for the time to the first step.
    """
    start_time = time.perf_counter() if start_time is None else start_time
    config = run.config
    workdir = pathlib.Path(workdir)
    is_main = jax.process_index() == 0
    if is_main:
        workdir.mkdir(parents=True, exist_ok=True)
    with jax.enable_x64(config.precision == "float64"):
        progress = {"step": 0}
        try:
            return _train(run, workdir, resume, start_time, is_main, progress)
        except Exception as e:
            if is_main:
                records = metrics.read_records(workdir / "metrics.jsonl")
                failed = summary.build(
                    config, records, status="failed", step=progress["step"], error=repr(e)
                )
                summary.write(workdir, failed)
            raise


def _place_split(mesh, split: dict | None) -> dict | None:
    """A dataset split as global device arrays (split over ``data`` when it divides evenly)."""
    if split is None:
        return None
    placement = sharding.dataset_sharding(mesh, len(split["y"]))
    return sharding.put(split, jax.tree.map(lambda _: placement, split))


def _init_state(run, mesh, init_key) -> tuple[TrainState, TrainState]:
    """The step-0 state and its shardings (parameters by the ``model`` rules)."""
    dtype = _float_dtype(run.config)
    x1 = run.dataset.train["x"][:1]

    def init_params(key):
        return _cast_params(run.model.init(key, x1), dtype)

    param_shardings = sharding.param_sharding(mesh, jax.eval_shape(init_params, init_key))
    params = jax.jit(init_params, out_shardings=param_shardings)(init_key)
    opt_state = jax.jit(run.tx.init)(params)
    # Pinning the state's shardings on the way in and out keeps one compilation of the step: the
    # initial state would otherwise differ in placement from the states the step returns.
    shardings = TrainState(
        sharding.replicated(mesh), param_shardings, sharding.state_sharding(mesh, opt_state)
    )
    return jax.device_put(TrainState(jnp.int32(0), params, opt_state), shardings), shardings


def _train(run, workdir, resume, start_time, is_main, progress):
    config = run.config
    mesh = sharding.make_mesh(config.mesh.data, config.mesh.model)
    dataset = run.dataset
    train_set = _place_split(mesh, dataset.train)
    test_set = _place_split(mesh, dataset.test)
    init_key, data_key = jax.random.split(jax.random.key(config.seed))
    state, state_shardings = _init_state(run, mesh, init_key)
    params = state.params

    loss_fn = step.make_loss_fn(run.model.apply, run.per_example_loss)
    ctx = ProbeContext(
        loss_fn=loss_fn,
        apply_fn=run.model.apply,
        per_example_loss=run.per_example_loss,
        train=train_set,
        test=test_set,
        num_classes=dataset.num_classes,
        learning_rate=run.learning_rate,
        tx=run.tx,
        mesh=mesh,
        config=config,
    )
    for probe in run.probes.values():
        probe.setup(ctx)
    probe_states = {name: p.init(ctx, params) for name, p in run.probes.items()}

    ckpt = checkpoint.Checkpoints((workdir / "checkpoints").absolute(), config.keep_checkpoints)
    metrics_path = workdir / "metrics.jsonl"
    records: list[dict] = []
    resumed_from = ckpt.latest_step() if resume else None
    if resumed_from is not None:
        state, probe_states = ckpt.restore(resumed_from, state, probe_states)
        if is_main:
            records = metrics.truncate(metrics_path, resumed_from)
    elif is_main:
        metrics_path.unlink(missing_ok=True)
        (workdir / "config.json").write_text(config.to_json_best_effort(indent=2, sort_keys=True))

    one_step = step.make_train_step(
        run.model.apply,
        run.per_example_loss,
        accuracy if dataset.num_classes is not None else None,
        run.tx,
        run.learning_rate,
        len(dataset.train["y"]),
        config.data.batch_size,
        sharding.batch_sharding(mesh),
    )
    replicated = sharding.replicated(mesh)
    multi_step = jax.jit(
        step.make_multi_step(one_step),
        in_shardings=(
            state_shardings,
            jax.tree.map(lambda a: a.sharding, train_set),
            replicated,
            replicated,
        ),
        out_shardings=(state_shardings, replicated, replicated),
        donate_argnums=0,
    )
    # device_put cannot target another process's devices; a jit can (multi-process runs).
    data_key = jax.jit(lambda k: k, out_shardings=replicated)(data_key)

    events = _Schedule(config, run.probes)
    writer = None
    if is_main:
        tb_dir = workdir / "tensorboard" if config.tensorboard else None
        writer = metrics.MetricWriter(metrics_path, tb_dir)

    def write(record):
        if writer is not None:
            records.append(writer.write(record))

    def run_probes(t, record):
        for name in events.probes_due(t):
            values, probe_states[name] = run.probes[name](
                ctx, t, state.params, state.opt_state, probe_states[name]
            )
            record.update(values)

    t = int(resumed_from or 0)
    progress["step"] = t
    if resumed_from is None:
        record = {}
        run_probes(0, record)
        if record:
            write({"step": 0, **jax.device_get(record)})

    status, diverged_step, stopped_early = "completed", None, False
    target = config.stop.train_accuracy
    bar = tqdm.tqdm(
        total=config.num_steps, initial=t, disable=not _progress_enabled(config), dynamic_ncols=True
    )
    # The first chunk is one step, so its end times compilation plus exactly one step; the rate
    # counts the steps after it, up to the end of the last chunk.
    first_step_time = None
    loop_start = loop_end = None
    loop_start_step = t
    try:
        while t < config.num_steps:
            n = 1 if first_step_time is None else events.next_event(t) - t
            state, last, diverged_at = multi_step(state, train_set, data_key, jnp.int32(n))
            diverged_at = int(diverged_at)  # waits for the chunk
            loop_end = time.perf_counter()
            if first_step_time is None:
                first_step_time = loop_end - start_time
                loop_start, loop_start_step = loop_end, t + n
            if diverged_at >= 0:
                status, diverged_step = "diverged", diverged_at
                t = diverged_at
                write({"step": t, **jax.device_get(last)})
                print(
                    f"diverged: the training loss is not finite at step {t}; stopping",
                    file=sys.stderr,
                )
                break
            t += n
            progress["step"] = t
            record = dict(last) if events.log(t) else {}
            run_probes(t, record)
            if record:
                record = jax.device_get(record)
                write({"step": t, **record})
                bar.set_postfix(loss=f"{float(record.get('loss', math.nan)):.4g}", refresh=False)
            bar.update(n)
            stop = target is not None and record.get("train_accuracy", -1.0) >= target
            if events.checkpoint(t) or t == config.num_steps or stop:
                ckpt.save(t, state, probe_states)
            if stop:
                stopped_early = True
                print(f"stopped: train accuracy reached {target} at step {t}", file=sys.stderr)
                break
    finally:
        bar.close()
        ckpt.close()
        if writer is not None:
            writer.close()

    now = time.perf_counter()
    if loop_start is not None and t > loop_start_step:
        steps_per_sec = (t - loop_start_step) / (loop_end - loop_start)
    else:
        steps_per_sec = (t - int(resumed_from or 0)) / (now - start_time)
    timing = {
        "time_to_first_step_sec": first_step_time,
        "steps_per_sec": steps_per_sec,
        "wall_time_sec": now - start_time,
        "resumed_from": resumed_from,
        "step_compilations": multi_step._cache_size(),
    }
    result = summary.build(
        config,
        records if is_main else [],
        status=status,
        step=t,
        diverged_step=diverged_step,
        stopped_early=stopped_early,
        **timing,
    )
    if is_main:
        from dynamics.train import plots

        if config.plots:
            plots.plot_run(records, workdir / "plots")
        result.update(summary.analyze(config, records, workdir / "plots"))
        summary.write(workdir, result)
    return result
