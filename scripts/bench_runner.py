"""Runner overhead: steps/s of ``experiments.run``'s loop vs a bare ``jax.jit`` loop, one process.

Both train the same model on the same device-resident data with the same optimizer (the
``configs/classification.py`` preset; full batch, or with ``--batch_size`` the same minibatches
from ``dynamics.data.batching``). The bare loop is the shortest correct JAX program: a jitted
``value_and_grad`` + ``tx.update`` step called from a Python loop with the state donated. The
runner's number is its own ``summary.json`` ``steps_per_sec`` (the first, compiling step
excluded), and its time to the first step counts from the start of this script's ``train`` call,
compilation included. Each side runs ``--repeats`` times alternately and the best rate is kept,
so a busy shared machine hurts both alike. Wall-clock rates on a shared machine swing with its
load, so CPU-time rates (steps per second of this process's CPU time, all threads) are printed
too: for the runner, the difference between a ``steps`` run and a ``steps // 4`` run, which
cancels building and compiling.

Usage:
  python scripts/bench_runner.py [--preset=digits_mlp] [--steps=2000] [--log_every=100]
      [--batch_size=64] [--repeats=3]

Measured on this project's 2-core CPU machine while shared with other jobs (load ~12):
full batch 2000 steps, runner/bare 1.13 wall, 1.20 CPU time, 5.8 s to the first step;
batch 64, 4000 steps, 1.05 wall, 1.73 CPU time.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import optax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # for configs/

from configs import classification  # noqa: E402
from dynamics.data.batching import batch_indices, get_batch  # noqa: E402
from dynamics.train.build import build  # noqa: E402
from dynamics.train.loop import train  # noqa: E402


def bare_loop(run, steps: int) -> tuple[float, float]:
    """(wall, CPU-time) steps/s of a hand-written jitted loop on the run's model/data/optimizer."""
    data = jax.device_put(run.dataset.train)
    num_examples = len(run.dataset.train["y"])
    batch_size = run.config.data.batch_size or 0
    key = jax.random.key(0)
    params = run.model.init(key, run.dataset.train["x"][:1])
    opt_state = run.tx.init(params)

    def loss_fn(p, batch):
        return jnp.mean(run.per_example_loss(run.model.apply(p, batch["x"]), batch["y"]))

    def step(params, opt_state, t):
        batch = data
        if 0 < batch_size < num_examples:
            batch = get_batch(data, batch_indices(key, t, num_examples, batch_size))
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        grad_fn = lambda p: jax.grad(loss_fn)(p, batch)  # noqa: E731
        updates, opt_state = run.tx.update(grads, opt_state, params, grad_fn=grad_fn)
        return optax.apply_updates(params, updates), opt_state, loss

    step = jax.jit(step, donate_argnums=(0, 1))
    params, opt_state, loss = step(params, opt_state, 0)
    loss.block_until_ready()
    start, cpu_start = time.perf_counter(), time.process_time()
    for t in range(steps):
        params, opt_state, loss = step(params, opt_state, t)
    loss.block_until_ready()
    return steps / (time.perf_counter() - start), steps / (time.process_time() - cpu_start)


def runner_loop(config) -> tuple[float, float, float]:
    """``loop.train`` on ``config``: wall steps/s, time to first step, CPU seconds."""
    start, cpu_start = time.perf_counter(), time.process_time()
    run = build(config)
    with tempfile.TemporaryDirectory() as workdir:
        summary = train(run, workdir, start_time=start)
    cpu = time.process_time() - cpu_start
    return summary["steps_per_sec"], summary["time_to_first_step_sec"], cpu


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="digits_mlp")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--log_every", type=int, default=100)
    parser.add_argument("--batch_size", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    config = classification.get_config(args.preset)
    config.num_steps = args.steps
    config.log_every = args.log_every
    config.probes.evaluation.every = 0
    config.checkpoint_every = 0
    config.progress = False
    config.plots = False
    config.data.batch_size = args.batch_size
    run = build(config)

    short = config.copy_and_resolve_references()
    short.num_steps = args.steps // 4
    bare, bare_cpu, runner, runner_cpu, first = [], [], [], [], []
    for _ in range(args.repeats):
        wall, cpu = bare_loop(run, args.steps)
        bare.append(wall)
        bare_cpu.append(cpu)
        rate, to_first, cpu_long = runner_loop(config)
        runner.append(rate)
        first.append(to_first)
        cpu_short = runner_loop(short)[2]
        runner_cpu.append((args.steps - short.num_steps) / (cpu_long - cpu_short))
    print(
        f"device: {jax.devices()[0].device_kind} x{jax.device_count()}, preset {args.preset}, "
        f"{args.steps} steps, log_every {args.log_every}"
    )
    runs = lambda rates: ", ".join(f"{r:.1f}" for r in rates)  # noqa: E731
    print(f"bare jax.jit loop : {max(bare):9.1f} steps/s  (runs: {runs(bare)})")
    print(f"experiments.run   : {max(runner):9.1f} steps/s  (runs: {runs(runner)})")
    print(f"ratio runner/bare : {max(runner) / max(bare):.3f}")
    print(f"CPU-time rates    : bare {max(bare_cpu):.1f}, runner {max(runner_cpu):.1f} steps/cpu-s")
    print(f"CPU-time ratio    : {max(runner_cpu) / max(bare_cpu):.3f}")
    print(
        f"time to first step: {min(first):.2f} s (build + init + compile, best of {args.repeats})"
    )


if __name__ == "__main__":
    main()
