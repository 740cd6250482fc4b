"""Central-flow cost: one substep in gradients and HVPs, and a preset's horizon against GD.

On a ``configs/central_flows.py`` preset (default ``gd_digits``), after compiling everything once,
this times in turn within each repeat (so both sides of a ratio see the same load): a full-batch
gradient, a full-batch HVP, one GD step, one central-flow step (``1/dt`` substeps), one step of
the stable flow (diffrax, adaptive), and prints the substep's cost in gradients and in HVPs and
the wall time of ``num_steps`` steps of the central flow (and of all three processes with their
per-step eigenvalues, as ``experiments.run`` does) against the same horizon of GD. The best of
``--repeats`` is kept.

Usage:
  python scripts/bench_flows.py [--preset=gd_digits] [--repeats=5]
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import jax
import optax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # for configs/

from configs import central_flows  # noqa: E402
from dynamics.curvature import hvp  # noqa: E402
from dynamics.flows.central import CentralFlow  # noqa: E402
from dynamics.flows.experiment import flow_kwargs, problem  # noqa: E402
from dynamics.flows.stable import StableFlow  # noqa: E402


def _best(fn, repeats, inner):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            out = fn()
        jax.block_until_ready(out)
        times.append((time.perf_counter() - start) / inner)
    return min(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="gd_digits")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    config = central_flows.get_config(args.preset)
    with jax.enable_x64(config.precision == "float64"):
        loss_fn, opt, params, batch = problem(config)
        kwargs = {k: v for k, v in flow_kwargs(config).items() if k != "max_sharpness"}
        central = CentralFlow(loss_fn, opt, **kwargs)
        stable = StableFlow(loss_fn, opt)
        grads = jax.grad(loss_fn)(params, batch)
        state = opt.initial_state(params, grads)
        tx = opt.transform()
        opt_state = opt.discrete_state(params, grads)
        grad_fn = jax.jit(jax.grad(loss_fn))
        hvp_fn = jax.jit(lambda p, v, b: hvp(loss_fn, p, v, b))

        @jax.jit
        def gd_step(p, s):
            updates, s = tx.update(jax.grad(loss_fn)(p, batch), s, p)
            return optax.apply_updates(p, updates), s

        cs = central.init(state, jax.random.key(0))
        key = jax.random.key(1)
        for fn in (
            lambda: grad_fn(params, batch),
            lambda: hvp_fn(params, grads, batch),
            lambda: gd_step(params, opt_state),
            lambda: central.advance(cs, key, batch),
            lambda: stable.advance(state, 0.0, batch),
        ):
            jax.block_until_ready(fn())
        # A state at the edge, so that the timed substeps solve a nonempty problem.
        for t in range(300):
            cs, _ = central.advance(cs, jax.random.fold_in(key, t), batch)
        inner = 20
        t_grad = _best(lambda: grad_fn(params, batch), args.repeats, inner)
        t_hvp = _best(lambda: hvp_fn(params, grads, batch), args.repeats, inner)
        t_gd = _best(lambda: gd_step(params, opt_state), args.repeats, inner)
        t_central = _best(lambda: central.advance(cs, key, batch), args.repeats, inner)
        t_stable = _best(lambda: stable.advance(state, 0.0, batch), args.repeats, inner)
    t_sub = t_central / central.substeps
    n = config.num_steps
    print(f"preset {args.preset}: {sum(x.size for x in jax.tree.leaves(params))} parameters, "
          f"{batch['x'].shape[0]} examples, k = {central.k}, {central.num_iters} Lanczos "
          f"products, dt = {central.dt}")  # fmt: skip
    print(f"gradient {t_grad * 1e3:.3f} ms, HVP {t_hvp * 1e3:.3f} ms (HVP/gradient "
          f"{t_hvp / t_grad:.2f})")  # fmt: skip
    print(f"central substep {t_sub * 1e3:.3f} ms = {t_sub / t_grad:.1f} gradients = "
          f"{t_sub / t_hvp:.1f} HVPs")  # fmt: skip
    print(f"stable-flow step (diffrax Tsit5, adaptive) {t_stable * 1e3:.3f} ms = "
          f"{t_stable / t_grad:.1f} gradients")  # fmt: skip
    print(f"{n} steps: GD {n * t_gd:.2f} s, central flow {n * t_central:.2f} s "
          f"({t_central / t_gd:.0f}x GD), stable flow {n * t_stable:.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
