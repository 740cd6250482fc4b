"""Update-rule benchmark: step time and state memory per rule as ratios to AdamW, NS throughput.

Prints, in one run, for an MLP of ``depth`` square ``width x width`` layers with biases
(float32, every update jitted as ``tx.update`` + ``apply_updates``, median of ``--reps`` calls):

1. ``muon`` (this library) vs ``optax.contrib.muon`` vs ``optax.adamw`` at each width in
   ``--widths``; target: ``muon`` no slower than optax's.
2. Every rule in ``OPTIMIZERS`` (rules added by other modules appear automatically), at its
   defaults: the steady-state update time as a ratio to AdamW, and the optimizer-state bytes as
   a ratio to the parameter bytes, at each width in ``--registry_widths``.
3. Every ``FILTERS`` entry chained before AdamW and every ``CONSTRAINTS`` entry chained after
   it: the chain's update time as a ratio to AdamW alone, and the transform's own state bytes /
   parameter bytes (AdamW's own state is 2.0). The sharpness-aware filters are timed with a
   ``grad_fn`` that returns fixed gradients, so their extra forward/backward pass, which depends
   on the model, is not counted.
4. Rules with a periodic refresh (shampoo, soap, splus, kron, conda): update time / AdamW on a
   step that refreshes the preconditioner (or basis) and on one that does not, at each width in
   ``--whitening_widths``.
5. Orthogonalizer throughput: Newton-Schulz (5 steps, Muon coefficients) and Polar Express
   (5 steps) in TFLOP/s on an ``n x n`` matrix, next to a plain ``n x n`` matmul of the same
   dtype measured in the same run. A quintic step costs 3 ``n^3`` matmuls, i.e. ``6 n^3`` flops.

Timing a step: one update is run first and the timed calls start from the state it returns,
so rules that refresh at their first step (Conda, SOAP, ...) are timed on a normal step; the
state is not carried between timed calls, so every call is that same step.

GPU targets (bf16 at n = 4096 and 8192: orthogonalizer >= 85% of the matmul rate) need an
accelerator; on CPU the script runs in float32 at small n (``--dtype=bfloat16
--sizes=4096,8192`` on a GPU).

Usage::

    python -m scripts.bench_optim            # the issues' sizes: widths 256-2048 (slow on CPU)
    python -m scripts.bench_optim --quick    # widths 128 and 256, n = 256, 3 reps: a CPU check
    python -m scripts.bench_optim --widths=2048 --registry_widths= --whitening_widths= --sizes=

An empty list skips a section (the last line times only Muon against optax's at width 2048).
On a loaded CPU machine set ``OPENBLAS_NUM_THREADS=1``: the LAPACK kernels behind ``eigh``,
``svd`` and ``qr`` otherwise spin their threads against the other jobs (on the 2-core
development VM at load 4, three 128 x 128 SVDs took 3 s instead of 7 ms).
"""

from __future__ import annotations

import argparse
import math
import time

import jax
import jax.numpy as jnp
import optax

from dynamics.optim import CONSTRAINTS, FILTERS, OPTIMIZERS, newton_schulz, polar_express

WIDTHS = [256, 512, 1024, 2048]
QUICK = {"widths": [128, 256], "sizes": [256], "reps": 3}


def mlp_params(width: int, depth: int, dtype=jnp.float32):
    keys = jax.random.split(jax.random.key(0), depth)
    return {
        f"layer{i}": {
            "kernel": jax.random.normal(k, (width, width), dtype) / width**0.5,
            "bias": jnp.zeros((width,), dtype),
        }
        for i, k in enumerate(keys)
    }


def fixed_grads(params):
    return jax.tree.map(lambda p: jnp.full_like(p, 0.01), params)


def time_fn(fn, *args, reps: int) -> float:
    """Median wall time of ``fn(*args)`` after one warm-up (compile) call, in seconds."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def jitted_step(tx: optax.GradientTransformation, params):
    """``(params, state) -> (params, state)``: one update with fixed grads, ``grad_fn`` passed."""
    tx = optax.with_extra_args_support(tx)
    grads = fixed_grads(params)

    def grad_fn(p):  # SAM-type rules call it; the model's gradient cost is not of interest here
        return grads

    @jax.jit
    def step(params, state):
        updates, state = tx.update(grads, state, params, grad_fn=grad_fn)
        return optax.apply_updates(params, updates), state

    return step


def time_update(tx, params, reps: int, calls_before: int = 1) -> float:
    """Seconds per jitted update from the state after ``calls_before`` updates (not carried)."""
    step = jitted_step(tx, params)
    state = tx.init(params)
    for _ in range(calls_before):
        _, state = step(params, state)
    return time_fn(step, params, state, reps=reps)


def tree_bytes(tree) -> int:
    return sum(math.prod(x.shape) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def state_ratio(tx, params) -> float:
    """Optimizer-state bytes / parameter bytes, from shapes only (nothing is allocated)."""
    return tree_bytes(jax.eval_shape(tx.init, params)) / tree_bytes(params)


NAME = 44  # width of the first column of the tables


def table_header(widths) -> str:
    return f"{'rule':<{NAME}}" + "".join(f"{'w=' + str(w):>10}" for w in widths)


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


def print_ratio_table(title, rows, widths, base):
    """``rows``: name -> {width: (time ratio or None, memory ratio)}; prints time, then memory."""
    print(f"\n== {title}: update time / AdamW update time")
    print(table_header(widths))
    print(f"{'(adamw ms)':<{NAME}}" + "".join(f"{1e3 * base[w]:>10.2f}" for w in widths))
    for name, cells in rows.items():
        times = [cells[w][0] for w in widths]
        print(
            f"{name:<{NAME}}"
            + "".join(f"{'error' if t is None else f'{t:.2f}':>10}" for t in times)
        )
    print(f"\n== {title}: state bytes / parameter bytes")
    print(table_header(widths))
    for name, cells in rows.items():
        print(f"{name:<{NAME}}" + "".join(f"{cells[w][1]:>10.2f}" for w in widths))


def bench_registry(widths, depth, reps):
    params = {w: mlp_params(w, depth) for w in widths}
    base = {w: time_update(optax.adamw(1e-3), params[w], reps) for w in widths}
    rows = {}
    for name in OPTIMIZERS.names():
        rows[name] = {}
        for w in widths:
            tx = OPTIMIZERS.build(name, {"learning_rate": 1e-3})
            try:
                ratio = time_update(tx, params[w], reps) / base[w]
            except Exception as e:  # a rule that cannot run at defaults is reported, not fatal
                ratio = None
                print(f"  {name} at width {w}: {type(e).__name__}: {e}")
            rows[name][w] = (ratio, state_ratio(tx, params[w]))
    print_ratio_table(
        f"every OPTIMIZERS entry at its defaults (MLP depth {depth})", rows, widths, base
    )


def bench_filters_constraints(widths, depth, reps):
    params = {w: mlp_params(w, depth) for w in widths}
    base = {w: time_update(optax.adamw(1e-3), params[w], reps) for w in widths}
    rows = {}
    for kind, registry in (("filter", FILTERS), ("constraint", CONSTRAINTS)):
        for name in registry.names():
            label = f"{name} ({'before' if kind == 'filter' else 'after'} adamw)"
            rows[label] = {}
            for w in widths:
                tx = registry.build(name, {})
                adamw = optax.adamw(1e-3)
                chain = optax.chain(tx, adamw) if kind == "filter" else optax.chain(adamw, tx)
                rows[label][w] = (
                    time_update(chain, params[w], reps) / base[w],
                    state_ratio(tx, params[w]),
                )
    print_ratio_table(
        f"every FILTERS / CONSTRAINTS entry chained with AdamW (MLP depth {depth}); memory is the "
        "transform's own state",
        rows,
        widths,
        base,
    )


# Rules with a periodic refresh: each is built so that a known step refreshes and another does
# not; the state is advanced to just before that step, then the same jitted step is timed.
# name: ((kwargs, calls before a refreshing step), (kwargs, calls before a plain step))
REFRESHING = {
    "shampoo": (
        ({"precondition_every": 2, "start_preconditioning_step": 1}, 0),
        ({"precondition_every": 2, "start_preconditioning_step": 1}, 1),
    ),
    "soap": (({"precondition_frequency": 2}, 2), ({"precondition_frequency": 2}, 1)),
    "splus": (({"inverse_every": 3}, 0), ({"inverse_every": 3}, 1)),
    "conda": (({"update_proj_gap": 2}, 0), ({"update_proj_gap": 2}, 1)),
    # kron refits with a probability, set to 1 for the refreshing step and to 0 for the plain one.
    "kron": (
        ({"max_update_probability": 1.0, "min_update_probability": 1.0}, 0),
        ({"max_update_probability": 0.0, "min_update_probability": 0.0}, 0),
    ),
}


def bench_refresh(widths, depth, reps):
    print("\n== rules with a periodic refresh / AdamW update time: on a refreshing step and on a")
    print(f"   plain one (MLP depth {depth}, float32)")
    print(f"{'rule':<10}{'width':>7}{'refresh':>10}{'plain':>10}")
    for w in widths:
        params = mlp_params(w, depth)
        base = time_update(optax.adamw(1e-3), params, reps)
        print(f"{'adamw':<10}{w:>7}{1e3 * base:>8.2f}ms")
        for name, cases in REFRESHING.items():
            ratios = [
                time_update(
                    OPTIMIZERS.build(name, {"learning_rate": 1e-3, **kwargs}), params, reps, calls
                )
                / base
                for kwargs, calls in cases
            ]
            print(f"{name:<10}{w:>7}" + "".join(f"{r:>10.2f}" for r in ratios))


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
    # An empty list (``--sizes=``) skips that section.
    ints = lambda s: [int(v) for v in s.split(",") if v]  # noqa: E731
    parser.add_argument("--quick", action="store_true", help="small sizes for a CPU check")
    parser.add_argument("--widths", type=ints, default=None, help=f"default {WIDTHS}")
    parser.add_argument("--registry_widths", type=ints, default=None, help=f"default {WIDTHS}")
    parser.add_argument("--whitening_widths", type=ints, default=None, help=f"default {WIDTHS}")
    parser.add_argument("--sizes", type=ints, default=None, help="default: 1024 CPU, 4096,8192 GPU")
    parser.add_argument("--dtype", default=None, help="default: float32 on CPU, bfloat16 else")
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--reps", type=int, default=None, help="default 10 (3 with --quick)")
    args = parser.parse_args()
    cpu = jax.default_backend() == "cpu"
    default_widths = QUICK["widths"] if args.quick else WIDTHS
    default_sizes = QUICK["sizes"] if args.quick else [1024] if cpu else [4096, 8192]

    def given(value, default):
        return default if value is None else value

    reps = given(args.reps, QUICK["reps"] if args.quick else 10)
    dtype = jnp.dtype(args.dtype or ("float32" if cpu else "bfloat16"))
    print(f"backend {jax.default_backend()}, devices {jax.devices()}, reps {reps}")
    bench_muon(given(args.widths, default_widths), args.depth, reps)
    registry_widths = given(args.registry_widths, default_widths)
    if registry_widths:
        bench_registry(registry_widths, args.depth, reps)
        bench_filters_constraints(registry_widths, args.depth, reps)
    bench_refresh(given(args.whitening_widths, default_widths), args.depth, reps)
    bench_orthogonalizers(given(args.sizes, default_sizes), dtype, reps)


if __name__ == "__main__":
    main()
