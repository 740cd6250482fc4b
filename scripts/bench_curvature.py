"""Benchmark of ``dynamics.curvature``: the ratios of issue 3, measured side by side in one run.

Prints, for a tanh MLP on Gaussian inputs with MSE loss (sizes are flags):

1. HVP time / gradient time (forward-over-reverse; target at most 2.5x).
2. Lanczos-30 time / 30 bare HVPs: the cost of full reorthogonalization (target at most 1.3x),
   and the same for the warm-started block Lanczos the sharpness probe runs.
3. HVPs needed to reach 1e-3 relative error in the top eigenvalue, Lanczos vs power iteration
   (reference: 100 Lanczos steps).
4. Peak memory (XLA's compiled temp + argument + output bytes) of one dataset HVP with and without
   microbatching.
5. Compile time of the jitted Lanczos (wall and process CPU seconds).

Times are medians of ``--repeats`` runs after a warm-up. The numbers recorded for this project so
far were measured on a shared 2-core CPU machine with no GPU (and other jobs running, so wall
times are noisy); run it on a GPU machine to get GPU figures, and name the device when you report
them. Usage:

  python -m scripts.bench_curvature --width=1024 --num_examples=4096 --microbatch_size=512
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from dynamics import curvature
from dynamics.curvature import tree


def make_problem(input_dim, width, depth, num_outputs, num_examples, seed=0):
    keys = jax.random.split(jax.random.key(seed), depth + 3)
    dims = [input_dim] + [width] * depth + [num_outputs]
    params = [
        {
            "w": jax.random.normal(keys[i], (a, b)) / jnp.sqrt(a),
            "b": jnp.zeros(b),
        }
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True))
    ]
    data = {
        "x": jax.random.normal(keys[-2], (num_examples, input_dim)),
        "y": jax.random.normal(keys[-1], (num_examples, num_outputs)),
    }

    def loss_fn(params, batch):
        h = batch["x"]
        for layer in params[:-1]:
            h = jnp.tanh(h @ layer["w"] + layer["b"])
        out = h @ params[-1]["w"] + params[-1]["b"]
        return 0.5 * jnp.mean(jnp.sum((out - batch["y"]) ** 2, axis=-1))

    return loss_fn, params, data


def timeit(calls, repeats):
    """Median seconds of each ``(fn, *args)`` in ``calls``, timed in turn within every repeat.

    Interleaving puts the compared functions under the same background load, which on a shared
    machine matters more than the number of repeats.
    """
    for fn, *args in calls:
        jax.block_until_ready(fn(*args))
    times = [[] for _ in calls]
    for _ in range(repeats):
        for (fn, *args), out in zip(calls, times, strict=True):
            start = time.perf_counter()
            jax.block_until_ready(fn(*args))
            out.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def first_below(values, reference, tol=1e-3):
    err = np.abs(np.asarray(values) - reference) / abs(reference)
    hits = np.nonzero(err < tol)[0]
    return int(hits[0]) + 1 if hits.size else None


def peak_bytes(fn, *args):
    stats = jax.jit(fn).lower(*args).compile().memory_analysis()
    return stats.temp_size_in_bytes + stats.argument_size_in_bytes + stats.output_size_in_bytes


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input_dim", type=int, default=128)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--num_outputs", type=int, default=10)
    parser.add_argument("--num_examples", type=int, default=1024)
    parser.add_argument("--microbatch_size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", default="highest")
    args = parser.parse_args()

    loss_fn, params, data = make_problem(
        args.input_dim, args.width, args.depth, args.num_outputs, args.num_examples
    )
    n = sum(x.size for x in jax.tree.leaves(params))
    print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()} ({jax.default_backend()})")
    print(
        f"model: tanh MLP {args.input_dim}-{'-'.join([str(args.width)] * args.depth)}-"
        f"{args.num_outputs}, {n:,} parameters, {args.num_examples} examples, MSE"
    )
    v = tree.normal_like(jax.random.key(1), params)

    with jax.default_matmul_precision(args.precision):
        grad = jax.jit(jax.grad(loss_fn))
        hvp = jax.jit(lambda p, v, d: curvature.hvp(loss_fn, p, v, d))
        t_grad, t_hvp = timeit([(grad, params, data), (hvp, params, v, data)], 3 * args.repeats)
        print(
            f"1. HVP / gradient time: {t_hvp * 1e3:.1f} ms / {t_grad * 1e3:.1f} ms = "
            f"{t_hvp / t_grad:.2f}x (target <= 2.5x)"
        )

        def bare(p, v, d):
            def body(_, u):
                hu = curvature.hvp(loss_fn, p, u, d)
                return tree.scale(1.0 / tree.norm(hu), hu)

            return jax.lax.fori_loop(0, 30, body, v)

        def lanczos30(p, v, d):
            return curvature.lanczos(lambda u: curvature.hvp(loss_fn, p, u, d), v, 30)

        lanczos_jit = jax.jit(lanczos30)
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        compiled = lanczos_jit.lower(params, v, data).compile()
        compile_wall, compile_cpu = (
            time.perf_counter() - start_wall,
            time.process_time() - start_cpu,
        )

        # What the warm-started sharpness probe runs: a Krylov space of 30 grown from 5 earlier
        # eigenvectors and a random vector (band width 12 in the first Gram-Schmidt pass).
        seeds = jax.tree.map(
            lambda x: jnp.stack([x] * 6) + jax.random.normal(jax.random.key(3), (6, *x.shape)),
            v,
        )

        def block30(p, s, d):
            return curvature.seeded_rayleigh_ritz(lambda u: curvature.hvp(loss_fn, p, u, d), s, 30)

        t_bare, t_lanczos, t_block = timeit(
            [
                (jax.jit(bare), params, v, data),
                (compiled, params, v, data),
                (jax.jit(block30), params, seeds, data),
            ],
            args.repeats,
        )
        print(
            f"2. Lanczos-30 / 30 bare HVPs: {t_lanczos:.3f} s / {t_bare:.3f} s = "
            f"{t_lanczos / t_bare:.2f}x (target <= 1.3x)"
        )
        print(
            f"   warm-started block Lanczos-30 (6 seeds) / 30 bare HVPs: {t_block:.3f} s / "
            f"{t_bare:.3f} s = {t_block / t_bare:.2f}x"
        )

        reference = jax.jit(
            lambda p, d: curvature.top_eigenpairs(
                loss_fn, p, d, k=1, num_iters=100, key=jax.random.key(2)
            )
        )(params, data)
        lam = float(reference.eigenvalues[0])
        run = jax.jit(
            lambda p, v, d: curvature.lanczos(lambda u: curvature.hvp(loss_fn, p, u, d), v, 100)
        )(params, v, data)
        t = np.asarray(curvature.tridiagonal(run.alphas, run.betas), np.float64)
        lanczos_top = [np.linalg.eigvalsh(t[:j, :j])[-1] for j in range(1, 101)]
        power = jax.jit(
            lambda p, v, d: curvature.power_iteration(
                lambda u: curvature.hvp(loss_fn, p, u, d), v, 500
            )
        )(params, v, data)
        n_lanczos = first_below(lanczos_top, lam)
        n_power = first_below(power.history, lam)
        print(
            f"3. HVPs to 1e-3 relative error in lambda_max = {lam:.5g} "
            f"(residual {float(reference.residuals[0]):.1e}): Lanczos {n_lanczos}, "
            f"power iteration {n_power if n_power else '> 500'}"
        )

        full = peak_bytes(
            lambda p, v, d: curvature.dataset_operator(loss_fn, p, d)(v), params, v, data
        )
        micro = peak_bytes(
            lambda p, v, d: curvature.dataset_operator(loss_fn, p, d, args.microbatch_size)(v),
            params,
            v,
            data,
        )
        print(
            f"4. peak memory of one dataset HVP: full batch {full / 2**20:.1f} MiB, "
            f"microbatches of {args.microbatch_size}: {micro / 2**20:.1f} MiB "
            f"({full / micro:.1f}x less)"
        )
        print(f"5. Lanczos-30 compile time: {compile_wall:.2f} s wall, {compile_cpu:.2f} s CPU")


if __name__ == "__main__":
    main()
