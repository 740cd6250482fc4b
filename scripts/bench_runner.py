"""Runner overhead: steps/s of ``experiments.run``'s loop vs a bare ``jax.jit`` loop, one process.

Both train the same model on the same device-resident data with the same optimizer (the
``configs/classification.py`` preset, full batch unless ``--batch_size``); the bare loop is the
shortest correct JAX program: a jitted ``value_and_grad`` + ``tx.update`` step called from a
Python loop with the state donated. The runner's number is its own ``summary.json``
``steps_per_sec`` (the first, compiling chunk excluded), and its time to the first step counts
from the start of this script's ``train`` call, compilation included. Each side runs
``--repeats`` times alternately and the best rate is kept, so a busy shared machine hurts both
alike.

Usage:
  python scripts/bench_runner.py [--preset=digits_mlp] [--steps=2000] [--log_every=100]
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
from dynamics.train.loop import build, train  # noqa: E402


def bare_loop(run, steps: int) -> float:
    """Steps/s of a hand-written jitted GD loop on the run's model, data and optimizer."""
    data = jax.device_put(run.dataset.train)
    params = run.model.init(jax.random.key(0), run.dataset.train["x"][:1])
    opt_state = run.tx.init(params)

    def loss_fn(p, batch):
        return jnp.mean(run.per_example_loss(run.model.apply(p, batch["x"]), batch["y"]))

    @jax.jit
    def step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        grad_fn = lambda p: jax.grad(loss_fn)(p, batch)  # noqa: E731
        updates, opt_state = run.tx.update(grads, opt_state, params, grad_fn=grad_fn)
        return optax.apply_updates(params, updates), opt_state, loss

    step = jax.jit(step, donate_argnums=(0, 1))
    params, opt_state, loss = step(params, opt_state, data)
    loss.block_until_ready()
    start = time.perf_counter()
    for _ in range(steps):
        params, opt_state, loss = step(params, opt_state, data)
    loss.block_until_ready()
    return steps / (time.perf_counter() - start)


def runner_loop(config) -> tuple[float, float]:
    """(steps/s, seconds to the first step) of ``dynamics.train.loop.train`` on ``config``."""
    start = time.perf_counter()
    run = build(config)
    with tempfile.TemporaryDirectory() as workdir:
        summary = train(run, workdir, start_time=start)
    return summary["steps_per_sec"], summary["time_to_first_step_sec"]


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
    config.eval_every = 0
    config.checkpoint_every = 0
    config.progress = False
    config.plots = False
    config.data.batch_size = args.batch_size
    run = build(config)

    bare, runner, first = [], [], []
    for _ in range(args.repeats):
        bare.append(bare_loop(run, args.steps))
        rate, to_first = runner_loop(config)
        runner.append(rate)
        first.append(to_first)
    print(
        f"device: {jax.devices()[0].device_kind} x{jax.device_count()}, preset {args.preset}, "
        f"{args.steps} steps, log_every {args.log_every}"
    )
    runs = lambda rates: ", ".join(f"{r:.1f}" for r in rates)  # noqa: E731
    print(f"bare jax.jit loop : {max(bare):9.1f} steps/s  (runs: {runs(bare)})")
    print(f"experiments.run   : {max(runner):9.1f} steps/s  (runs: {runs(runner)})")
    print(f"ratio runner/bare : {max(runner) / max(bare):.3f}")
    print(
        f"time to first step: {min(first):.2f} s (build + init + compile, best of {args.repeats})"
    )


if __name__ == "__main__":
    main()
