"""The training loop: train a built run with events between chunks.

:func:`train` runs a :class:`dynamics.train.build.Run` (from :func:`dynamics.train.build.build`,
which checks everything a config can get wrong before a run directory exists).

The loop alternates a jitted chunk of optimizer steps (:func:`dynamics.train.step.make_multi_step`,
one compilation for every chunk length) with host *events* at the steps where something must
happen: a metrics record (``log_every``), a probe (``probes.<name>.every``, the full-dataset
``evaluation`` probe included), a checkpoint (``checkpoint_every``) and the last step.
At step 0 the probes run on the initial parameters. Between events nothing crosses the host.
Each pass of the loop is: a chunk, the divergence check (found on device by the chunk), the
record, the checkpoint, the stop (early-stopping target, SIGTERM/SIGINT). The pieces around it
have their own modules: the files of the run (:mod:`dynamics.train.outputs`), its clock and
progress report (:mod:`dynamics.train.chrono`), the signals (:mod:`dynamics.train.interrupts`),
what a resume accepts (:mod:`dynamics.train.resume`).

Resuming restores the newest readable checkpoint (train state and probe states; an unreadable one
is moved aside with a warning) and truncates ``metrics.jsonl`` to its step; minibatches are a
pure function of ``(seed, step)``, so the resumed run writes the same records as an uninterrupted
one. A diverged run checkpoints the state its diverging step started from, the last finite one,
recomputed from the checkpoint before it (the chunk donates its input state).

Example:
  >>> from dynamics.train.config import base_config, validate
  >>> config = base_config()
  >>> config.num_steps = 100
  >>> warnings = validate(config)
  >>> from dynamics.train.build import build
  >>> summary = train(build(config), "/tmp/digits-run")  # doctest: +SKIP
  >>> summary["status"]  # doctest: +SKIP
  'completed'
"""

from __future__ import annotations

import os
import pathlib
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from dynamics.losses import accuracy
from dynamics.registry import ConfigError
from dynamics.train import checkpoint, sharding, step
from dynamics.train import resume as resume_rules
from dynamics.train.build import Run, cast_params, float_dtype
from dynamics.train.chrono import Chrono
from dynamics.train.interrupts import Interrupts
from dynamics.train.outputs import RunOutputs
from dynamics.train.probes import ProbeContext
from dynamics.train.resume import Resume
from dynamics.train.state import TrainState


def _chrono(config, start_time, step, is_main) -> Chrono:
    """Progress from process 0 if ``config.progress``: a bar on a terminal, else 10 lines."""
    shown = is_main and bool(config.progress)
    bar = shown and sys.stdout.isatty() and not os.environ.get("CI")
    lines = 10 if shown and not bar else 0
    return Chrono(start_time, step, config.num_steps, bar=bar, lines=lines)


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


class ResumeError(ConfigError):
    """``--resume`` cannot continue this run directory (one line, nothing written)."""


def train(
    run: Run,
    workdir,
    *,
    resume: bool | Resume | None = False,
    start_time: float | None = None,
) -> dict[str, Any]:
    """Trains ``run`` in ``workdir`` and returns the summary also written to ``summary.json``.

    Args:
      run: from :func:`build`.
      workdir: the run directory (created if needed). The caller decides whether an existing one
        may be used (``experiments.run`` refuses non-empty ones unless resuming or overwriting).
      resume: continue from the newest readable checkpoint in ``workdir``: True checks the
        config against the recorded one first (:func:`dynamics.train.resume.plan`, raising
        ConfigError), a :class:`~dynamics.train.resume.Resume` is a plan already checked. An
        empty or absent ``workdir`` starts afresh. Raises :class:`ResumeError` when no
        checkpoint can be read, leaving the directory as it was.
      start_time: ``time.perf_counter()`` at process start, for the time to the first step.

    SIGTERM and SIGINT stop the run after the chunk in flight, with a checkpoint at that step and
    status ``interrupted`` (:mod:`dynamics.train.interrupts`).
    """
    start_time = time.perf_counter() if start_time is None else start_time
    config = run.config
    workdir = pathlib.Path(workdir)
    if resume is True:
        resume = resume_rules.plan(workdir, config)
    is_main = jax.process_index() == 0
    if is_main:
        workdir.mkdir(parents=True, exist_ok=True)
    outputs = RunOutputs(workdir, config, is_main=is_main)
    single = jax.process_count() == 1
    with jax.enable_x64(config.precision == "float64"), Interrupts(enabled=single) as interrupts:
        try:
            return _train(run, outputs, resume or None, start_time, interrupts)
        except ResumeError:
            raise
        except Exception as e:
            outputs.fail(e)
            raise


def _place_split(mesh, split: dict | None) -> dict | None:
    """A dataset split as global device arrays (split over ``data`` when it divides evenly)."""
    if split is None:
        return None
    placement = sharding.dataset_sharding(mesh, len(split["y"]))
    return sharding.put(split, jax.tree.map(lambda _: placement, split))


def _init_state(run, mesh, init_key) -> tuple[TrainState, TrainState]:
    """The step-0 state and its shardings (parameters by the ``model`` rules)."""
    dtype = float_dtype(run.config)
    x1 = run.dataset.train["x"][:1]

    def init_params(key):
        return cast_params(run.model.init(key, x1), dtype)

    param_shardings = sharding.param_sharding(mesh, jax.eval_shape(init_params, init_key))
    params = jax.jit(init_params, out_shardings=param_shardings)(init_key)
    opt_state = jax.jit(run.tx.init)(params)
    # Pinning the state's shardings on the way in and out keeps one compilation of the step: the
    # initial state would otherwise differ in placement from the states the step returns.
    shardings = TrainState(
        sharding.replicated(mesh), param_shardings, sharding.state_sharding(mesh, opt_state)
    )
    return jax.device_put(TrainState(jnp.int32(0), params, opt_state), shardings), shardings


def _make_multi_step(run, mesh, state_shardings, train_set) -> tuple[Callable, list[int]]:
    """The jitted chunk of steps and a one-element list counting its traces.

    Every trace of a jitted function is followed by one compilation, so the count is the number
    of compilations (one for every chunk length when the state's shardings are pinned).
    """
    one_step = step.make_train_step(
        run.model.apply,
        run.per_example_loss,
        accuracy if run.dataset.num_classes is not None else None,
        run.tx,
        run.learning_rate,
        len(run.dataset.train["y"]),
        run.config.data.batch_size,
        sharding.batch_sharding(mesh),
    )
    multi_step = step.make_multi_step(one_step)
    traces = [0]

    def counted(*args):
        traces[0] += 1
        return multi_step(*args)

    replicated = sharding.replicated(mesh)
    jitted = jax.jit(
        counted,
        in_shardings=(
            state_shardings,
            jax.tree.map(lambda a: a.sharding, train_set),
            replicated,
            replicated,
        ),
        out_shardings=(state_shardings, replicated, replicated),
        donate_argnums=0,
    )
    return jitted, traces


def _restore(ckpt, state, probe_states, resume, is_main):
    """``(step, state, probe_states)`` of the newest readable checkpoint (step 0: a fresh start)."""
    if resume is None:
        return 0, state, probe_states
    try:
        t, state, probe_states, unreadable = ckpt.restore_latest(
            state, probe_states, move_aside=is_main
        )
    except checkpoint.UnreadableCheckpoints as e:
        bad = ", ".join(f"step {s} ({why})" for s, why in e.args[0])
        raise ResumeError(
            f"no readable checkpoint in {ckpt.directory}: {bad}; nothing was changed"
        ) from None
    for bad, why in unreadable:
        print(
            f"warning: checkpoint {ckpt.directory / str(bad)} is unreadable ({why}); resuming "
            f"from step {t} and moving it to {ckpt.directory.name}-unreadable/",
            file=sys.stderr,
        )
    return int(t), state, probe_states


def _all_finite(tree) -> bool:
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return all(bool(jnp.all(jnp.isfinite(x))) for x in leaves)


def _setup(run):
    """The device mesh, the placed data, the keys, the step-0 state and the probe context."""
    config = run.config
    mesh = sharding.make_mesh(config.mesh.data, config.mesh.model)
    train_set = _place_split(mesh, run.dataset.train)
    init_key, data_key = jax.random.split(jax.random.key(config.seed))
    # device_put cannot target another process's devices; a jit can (multi-process runs).
    data_key = jax.jit(lambda k: k, out_shardings=sharding.replicated(mesh))(data_key)
    state, state_shardings = _init_state(run, mesh, init_key)
    ctx = ProbeContext(
        loss_fn=step.make_loss_fn(run.model.apply, run.per_example_loss),
        apply_fn=run.model.apply,
        per_example_loss=run.per_example_loss,
        train=train_set,
        test=_place_split(mesh, run.dataset.test),
        num_classes=run.dataset.num_classes,
        learning_rate=run.learning_rate,
        tx=run.tx,
        mesh=mesh,
        config=config,
    )
    for probe in run.probes.values():
        probe.setup(ctx)
    return mesh, train_set, (init_key, data_key), state, state_shardings, ctx


def _train(run, outputs: RunOutputs, resume: Resume | None, start_time, interrupts):
    config = run.config
    mesh, train_set, (init_key, data_key), state, state_shardings, ctx = _setup(run)
    probe_states = {name: p.init(ctx, state.params) for name, p in run.probes.items()}
    ckpt = checkpoint.Checkpoints(
        (outputs.workdir / "checkpoints").absolute(), config.keep_checkpoints
    )
    chrono = None
    try:
        t, state, probe_states = _restore(ckpt, state, probe_states, resume, outputs.is_main)
        outputs.start(t, resume)
        multi_step, traces = _make_multi_step(run, mesh, state_shardings, train_set)
        events = _Schedule(config, run.probes)

        def probes_at(t, record):
            for name in events.probes_due(t):
                values, probe_states[name] = run.probes[name](
                    ctx, t, state.params, state.opt_state, probe_states[name]
                )
                record.update(values)
            return record

        def replay_to(t):
            """The state at step ``t``, recomputed from the newest checkpoint at or before it (or
            from step 0): the chunk donates its input, and keeping a copy on device for the rare
            divergence would cost every step. The same jitted chunk makes it bit-identical."""
            saved = [s for s in ckpt.manager.all_steps() if s <= t]
            if saved:
                start = ckpt.restore(saved[-1], state, probe_states)[0]
            else:
                start = _init_state(run, mesh, init_key)[0]
            if t > int(start.step):
                start = multi_step(start, train_set, data_key, jnp.int32(t - int(start.step)))[0]
            return start

        if resume is None and (record := probes_at(0, {})):
            outputs.write({"step": 0, **jax.device_get(record)})

        chrono = _chrono(config, start_time, t, outputs.is_main)
        status, ending = "completed", {"stopped_early": False}
        target = config.stop.train_accuracy
        while t < config.num_steps:
            # The first chunk is one step: its end times compilation plus exactly one step.
            n = 1 if chrono.first_step_time is None else events.next_event(t) - t
            state, last, diverged_at = multi_step(state, train_set, data_key, jnp.int32(n))
            diverged_at = int(diverged_at)  # waits for the chunk
            if diverged_at >= 0:
                t = diverged_at
                chrono.chunk_done(t)
                outputs.write({"step": t, **jax.device_get(last), "diverged": True})
                kept = _keep_last_finite(ckpt, t - 1, replay_to, probe_states)
                status = "diverged"
                ending |= {"diverged_step": t, "checkpoint_step": kept}
                print(
                    f"diverged: the training loss is not finite at step {t}; stopping",
                    file=sys.stderr,
                )
                break
            t += n
            chrono.chunk_done(t)
            record = probes_at(t, dict(last) if events.log(t) else {})
            if record:
                record = outputs.write({"step": t, **jax.device_get(record)})
            chrono.report(record.get("loss"))
            stop = target is not None and (record.get("train_accuracy") or -1.0) >= target
            interrupted = interrupts.signum is not None and t < config.num_steps
            if events.checkpoint(t) or t == config.num_steps or stop or interrupted:
                ckpt.save(t, state, probe_states)
            if stop:
                ending["stopped_early"] = True
                print(f"stopped: train accuracy reached {target} at step {t}", file=sys.stderr)
                break
            if interrupted:
                status, ending["signal"] = "interrupted", interrupts.name
                break
    finally:
        if chrono is not None:
            chrono.close()
        ckpt.close()
        outputs.close()

    return outputs.finish(
        status=status,
        step=t,
        **ending,
        **chrono.timing(),
        resumed_from=outputs.start_step if resume is not None else None,
        step_compilations=traces[0],
    )


def _keep_last_finite(ckpt, t: int, replay_to, probe_states) -> int | None:
    """Checkpoints the last finite state of a diverged run, step ``t``; returns ``t`` or None.

    Step ``t`` is the one the diverging step started from. Its probe states are the current ones
    (the probes last ran at the start of the diverging chunk, at or before ``t``). None when its
    parameters are not finite either (the previous periodic checkpoint is the last finite one
    then) or there is no step ``t`` (divergence at the first step).
    """
    if t < 0:
        return None
    if t in ckpt.manager.all_steps():
        return t
    state = replay_to(t)
    if not _all_finite(state.params):
        return None
    ckpt.save(t, state, probe_states)
    return t
