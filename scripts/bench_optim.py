"""Update-rule benchmark: step time per rule as a ratio to AdamW, Muon vs optax's, NS throughput.

Prints, in one run:

1. ``muon`` (this library) vs ``optax.contrib.muon`` vs ``optax.adamw``: jitted update time
   (``tx.update`` + ``apply_updates``) for an MLP of ``depth`` square ``width x width`` layers
   with biases, at each width in ``--widths``; target: ``muon`` no slower than optax's.
2. Every rule in ``OPTIMIZERS`` (so rules added by other modules appear automatically): update
   time as a ratio to AdamW at each width in ``--registry_widths``.
3. Whitening rules (shampoo, soap, splus, kron): update time / AdamW on a step that refreshes
   the preconditioner and on one that does not, and optimizer-state bytes / parameter bytes.
4. Orthogonalizer throughput: Newton-Schulz (5 steps, Muon coefficients) and Polar Express
   (5 steps) in TFLOP/s on an ``n x n`` matrix, next to a plain ``n x n`` matmul of the same
   dtype measured in the same run. A quintic step costs 3 ``n^3`` matmuls, i.e. ``6 n^3`` flops.

GPU targets (bf16 at n = 4096 and 8192: orthogonalizer >= 85% of the matmul rate) need an
accelerator; on CPU the script runs in float32 at small n, and the GPU figures stay unmeasured
until it is run there (``--dtype=bfloat16 --sizes=4096,8192``).

Usage::

    python -m scripts.bench_optim                      # CPU defaults
    python -m scripts.bench_optim --widths=256,512 --registry_widths=256 --sizes=512 --reps=5
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import optax

from dynamics.optim import OPTIMIZERS, newton_schulz, polar_express


def mlp_params(width: int, depth: int, dtype=jnp.float32):
    keys = jax.random.split(jax.random.key(0), depth)
    return {
        f"layer{i}": {
            "kernel": jax.random.normal(k, (width, width), dtype) / width**0.5,
            "bias": jnp.zeros((width,), dtype),
        }
        for i, k in enumerate(keys)
    }


def time_fn(fn, *args, reps: int) -> float:
    """Median wall time of ``fn(*args)`` after one warm-up (compile) call, in seconds."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def time_update(tx: optax.GradientTransformation, params, reps: int) -> float:
    """Seconds per jitted ``update + apply_updates`` (grads fixed; ``grad_fn`` passed)."""
    tx = optax.with_extra_args_support(tx)
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.01), params)
    grad_fn = lambda p: grads  # noqa: E731  (SAM-type rules call it; cost not of interest here)

    @jax.jit
    def step(params, state):
        updates, state = tx.update(grads, state, params, grad_fn=grad_fn)
        return optax.apply_updates(params, updates), state

    # One step first: rules with a periodic refresh (Conda, Shampoo, ...) refresh at step 0, so
    # timing from the initial state would time the refresh every call.
    _, state = step(params, tx.init(params))
    return time_fn(step, params, state, reps=reps)


def bench_muon(widths, depth, reps):
    print(f"\n== muon vs optax.contrib.muon vs optax.adamw (MLP depth {depth}, ms per update)")
    print(f"{'width':>6} {'adamw':>9} {'optax_muon':>11} {'muon':>9} {'muon/optax':>11}")
    for width in widths:
        params = mlp_params(width, depth)
        t_adam = time_update(optax.adamw(1e-3), params, reps)
        t_optax = time_update(optax.contrib.muon(0.02), params, reps)
        t_ours = time_update(OPTIMIZERS.build("muon", {"learning_rate": 0.02}), params, reps)
        print(
            f"{width:>6} {1e3 * t_adam:>9.2f} {1e3 * t_optax:>11.2f} {1e3 * t_ours:>9.2f} "
            f"{t_ours / t_optax:>11.2f}"
        )


def bench_registry(widths, depth, reps):
    print(f"\n== every OPTIMIZERS entry: update time / AdamW update time (MLP depth {depth})")
    print(f"{'rule':<32}" + "".join(f"{'w=' + str(w):>10}" for w in widths))
    params = {w: mlp_params(w, depth) for w in widths}
    base = {w: time_update(optax.adamw(1e-3), params[w], reps) for w in widths}
    print(f"{'(adamw ms)':<32}" + "".join(f"{1e3 * base[w]:>10.2f}" for w in widths))
    for name in OPTIMIZERS.names():
        cells = []
        for w in widths:
            try:
                tx = OPTIMIZERS.build(name, {"learning_rate": 1e-3})
                cells.append(f"{time_update(tx, params[w], reps) / base[w]:>10.2f}")
            except Exception as e:  # a rule that cannot run at defaults is reported, not fatal
                cells.append(f"{'error':>10}")
                print(f"  {name} at width {w}: {type(e).__name__}: {e}")
        print(f"{name:<32}" + "".join(cells))


# Whitening rules: update time with and without a preconditioner refresh, and state memory.
# Each rule is built so that a known step refreshes (``refresh``) and another does not (``plain``);
# the state is advanced to just before that step, then the same jitted step is timed repeatedly.
WHITENING = {
    # name: (kwargs, calls before a refreshing step, calls before a plain step)
    "shampoo": ({"precondition_every": 2, "start_preconditioning_step": 1}, 0, 1),
    "soap": ({"precondition_frequency": 2}, 2, 1),
    "splus": ({"inverse_every": 3}, 0, 1),
}
KRON_REFIT = {"max_update_probability": 1.0, "min_update_probability": 1.0}
KRON_NO_REFIT = {"max_update_probability": 0.0, "min_update_probability": 0.0}


def _tree_bytes(tree) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def _advanced_state(tx, params, calls):
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.01), params)
    state = tx.init(params)
    for _ in range(calls):
        _, state = jax.jit(tx.update)(grads, state, params)
    return state


def time_update_from(tx, params, state, reps: int) -> float:
    """Seconds per jitted update from a given state (the state is not carried between calls)."""
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.01), params)

    @jax.jit
    def step(params, state):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return time_fn(step, params, state, reps=reps)


def bench_whitening(widths, depth, reps):
    print("\n== whitening rules / AdamW update time, with and without a preconditioner refresh,")
    print(f"   and optimizer-state memory / parameter memory (MLP depth {depth}, float32)")
    print(f"{'rule':<10}{'width':>7}{'refresh':>10}{'plain':>10}{'state/params':>14}")
    for w in widths:
        params = mlp_params(w, depth)
        base = time_update(optax.adamw(1e-3), params, reps)
        adam_mem = _tree_bytes(optax.adamw(1e-3).init(params)) / _tree_bytes(params)
        print(f"{'adamw':<10}{w:>7}{1e3 * base:>8.2f}ms{'':>10}{adam_mem:>14.2f}")
        cases = {
            n: (OPTIMIZERS.build(n, {"learning_rate": 1e-3, **kw}), r, p)
            for n, (kw, r, p) in WHITENING.items()
        }
        for name, (tx, r_calls, p_calls) in cases.items():
            t_ref = time_update_from(tx, params, _advanced_state(tx, params, r_calls), reps)
            t_plain = time_update_from(tx, params, _advanced_state(tx, params, p_calls), reps)
            mem = _tree_bytes(tx.init(params)) / _tree_bytes(params)
            print(f"{name:<10}{w:>7}{t_ref / base:>10.2f}{t_plain / base:>10.2f}{mem:>14.2f}")
        refit = OPTIMIZERS.build("kron", {"learning_rate": 1e-3, **KRON_REFIT})
        still = OPTIMIZERS.build("kron", {"learning_rate": 1e-3, **KRON_NO_REFIT})
        t_ref = time_update_from(refit, params, refit.init(params), reps)
        t_plain = time_update_from(still, params, still.init(params), reps)
        mem = _tree_bytes(refit.init(params)) / _tree_bytes(params)
        print(f"{'kron':<10}{w:>7}{t_ref / base:>10.2f}{t_plain / base:>10.2f}{mem:>14.2f}")


def bench_orthogonalizers(sizes, dtype, reps):
    print(f"\n== orthogonalizer throughput, {jnp.dtype(dtype).name}, device {jax.devices()[0]}")
    print(
        f"{'n':>6} {'matmul TF/s':>12} {'NS5 TF/s':>9} {'NS5/mm':>7} {'PE5 TF/s':>9} {'PE5/mm':>7}"
    )
    for n in sizes:
        x = jax.random.normal(jax.random.key(1), (n, n), dtype)
        mm = jax.jit(lambda a: a @ a)
        ns = jax.jit(lambda a: newton_schulz(a, steps=5, dtype=dtype))
        pe = jax.jit(lambda a: polar_express(a, steps=5, dtype=dtype))
        rate_mm = 2 * n**3 / time_fn(mm, x, reps=reps) / 1e12
        rate_ns = 5 * 6 * n**3 / time_fn(ns, x, reps=reps) / 1e12
        rate_pe = 5 * 6 * n**3 / time_fn(pe, x, reps=reps) / 1e12
        print(
            f"{n:>6} {rate_mm:>12.3f} {rate_ns:>9.3f} {rate_ns / rate_mm:>7.2f} "
            f"{rate_pe:>9.3f} {rate_pe / rate_mm:>7.2f}"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ints = lambda s: [int(v) for v in s.split(",")]  # noqa: E731
    parser.add_argument("--widths", type=ints, default=[256, 512, 1024, 2048])
    parser.add_argument("--registry_widths", type=ints, default=[256, 1024])
    parser.add_argument("--whitening_widths", type=ints, default=[256, 512, 1024, 2048])
    parser.add_argument("--sizes", type=ints, default=None, help="default: 1024 CPU, 4096,8192 GPU")
    parser.add_argument("--dtype", default=None, help="default: float32 on CPU, bfloat16 else")
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args()
    cpu = jax.default_backend() == "cpu"
    sizes = args.sizes or ([1024] if cpu else [4096, 8192])
    dtype = jnp.dtype(args.dtype or ("float32" if cpu else "bfloat16"))
    print(f"backend {jax.default_backend()}, devices {jax.devices()}")
    bench_muon(args.widths, args.depth, args.reps)
    bench_registry(args.registry_widths, args.depth, args.reps)
    bench_whitening(args.whitening_widths, args.depth, args.reps)
    bench_orthogonalizers(sizes, dtype, args.reps)


if __name__ == "__main__":
    main()
