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
6. Batch sharpness: the cost of one minibatch's g^T H g / ||g||^2 as a multiple of one gradient
   and of one HVP on that minibatch (target at most 2 HVPs).
7. Eager calls on Cohen et al.'s fc-tanh 3072-200-200-10 (1,000 random examples): the third
   eager ``top_eigenpairs(k=1, num_iters=30)`` call with new parameters / the same call under
   ``jax.jit`` (target at most 1.3x), / the 31 bare HVPs it needs, its error against a 100-step
   reference, and, interleaved with it in one loop, PyHessian's ``eigenvalues(top_n=1, tol=1e-6)``
   on the same network, weights and data (median over ``--pyhessian_starts`` random starts),
   run in a separate virtual environment with torch that the script builds once under
   ``--cache_dir`` (``--no_pyhessian`` or a failed build skips it with a message; torch is never a
   dependency of this project).

Times are medians of ``--repeats`` runs after a warm-up. The numbers recorded for this project so
far were measured on a shared 2-core CPU machine with no GPU (and other jobs running, so wall
times are noisy); run it on a GPU machine to get GPU figures, and name the device when you report
them. Usage:

  python -m scripts.bench_curvature --width=1024 --num_examples=4096 --microbatch_size=512
  python -m scripts.bench_curvature --sections=6,7   # the eager and PyHessian comparison only
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
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
    parser.add_argument("--sections", default="1,2,3,4,5,6,7", help="comma-separated sections")
    parser.add_argument("--pyhessian_starts", type=int, default=3)
    parser.add_argument("--no_pyhessian", action="store_true")
    parser.add_argument(
        "--cache_dir",
        default=os.environ.get(
            "DYNAMICS_BENCH_CACHE", str(pathlib.Path.home() / ".cache/dynamics")
        ),
    )
    args = parser.parse_args()
    sections = {int(x) for x in args.sections.split(",")}
    if sections & {1, 2, 3, 4, 5}:
        core_sections(args)
    if 6 in sections:
        batch_sharpness_cost(args)
    if 7 in sections:
        eager_and_pyhessian(args)


def core_sections(args):

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


PYHESSIAN_WORKER = """
import json, sys, time
import numpy as np, torch
d = np.load(sys.argv[1])
layers = []
for i in range(d["num_layers"]):
    lin = torch.nn.Linear(*d[f"w{i}"].shape)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(d[f"w{i}"].T.copy()))
        lin.bias.copy_(torch.from_numpy(d[f"b{i}"]))
    layers += [lin, torch.nn.Tanh()]
model = torch.nn.Sequential(*layers[:-1])
x, y = torch.from_numpy(d["x"]), torch.from_numpy(d["y"])
crit = lambda out, t: 0.5 * ((out - t) ** 2).sum(1).mean()
try:
    from pyhessian import hessian
    kind = "pyhessian"
except ImportError:
    hessian, kind = None, "torch power iteration (PyHessian's algorithm, tol 1e-6)"

def power(max_iter=100, tol=1e-6):
    params = [p for p in model.parameters()]
    loss = crit(model(x), y)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    v = [torch.randn_like(p) for p in params]
    eig = None
    for _ in range(max_iter):
        norm = torch.sqrt(sum((u * u).sum() for u in v))
        v = [u / norm for u in v]
        hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True)
        tmp = sum((a * b).sum() for a, b in zip(hv, v)).item()
        v = [h.detach() for h in hv]
        if eig is not None and abs(eig - tmp) / (abs(eig) + 1e-6) < tol:
            return tmp
        eig = tmp
    return eig

print(json.dumps({"kind": kind, "torch": torch.__version__, "threads": torch.get_num_threads()}),
      flush=True)
for line in sys.stdin:
    torch.manual_seed(int(line))
    start = time.perf_counter()
    if hessian is not None:
        values, _ = hessian(model, crit, data=(x, y), cuda=False).eigenvalues(
            maxIter=100, tol=1e-6, top_n=1)
        value = values[0]
    else:
        value = power()
    print(json.dumps({"time": time.perf_counter() - start, "eigenvalue": value}), flush=True)
"""


def pyhessian_python(cache_dir: pathlib.Path) -> pathlib.Path | None:
    """The python of a virtual environment with torch (CPU) and PyHessian, built once."""
    venv = cache_dir / "pyhessian-venv"
    python = venv / "bin" / "python"
    if python.exists() and subprocess.run([python, "-c", "import torch"]).returncode == 0:
        return python
    print(f"   building {venv} (torch==2.13.0, PyHessian) once ...", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, "torch==2.13.0", "numpy"], check=True)
        # PyHessian 0.1 pins nothing it needs beyond torch and numpy.
        if subprocess.run([*pip, "--no-deps", "pyhessian"]).returncode != 0:
            print("   PyHessian is not installable here: its algorithm is run in torch instead")
    except (subprocess.CalledProcessError, OSError) as e:
        print(f"   could not build the torch environment ({e}); skipping the PyHessian comparison")
        return None
    return python


def batch_sharpness_cost(args):
    from dynamics.curvature.minibatch import gradient_curvature

    loss_fn, params, data = make_problem(
        args.input_dim, args.width, args.depth, args.num_outputs, 32
    )
    v = tree.normal_like(jax.random.key(1), params)
    with jax.default_matmul_precision(args.precision):
        grad = jax.jit(jax.grad(loss_fn))
        hvp = jax.jit(lambda p, v, d: curvature.hvp(loss_fn, p, v, d))
        ratio = jax.jit(lambda p, d: gradient_curvature(loss_fn, p, d))
        t_grad, t_hvp, t_ratio = timeit(
            [(grad, params, data), (hvp, params, v, data), (ratio, params, data)], 10 * args.repeats
        )
    print(
        f"6. batch sharpness per minibatch of 32 (gradient + forward-over-forward): "
        f"{t_ratio * 1e3:.2f} ms = {t_ratio / t_grad:.2f} gradients = {t_ratio / t_hvp:.2f} HVPs "
        f"(target <= 2 HVPs; gradient {t_grad * 1e3:.2f} ms, HVP {t_hvp * 1e3:.2f} ms)"
    )


def eager_and_pyhessian(args):
    loss_fn, params, data = make_problem(3072, 200, 2, 10, 1000)
    n = sum(x.size for x in jax.tree.leaves(params))
    print(
        f"7. Cohen et al.'s fc-tanh 3072-200-200-10, {n:,} parameters, 1,000 random examples, MSE"
    )
    key = jax.random.key(0)

    def perturbed(i):
        noise = tree.normal_like(jax.random.key(100 + i), params)
        return tree.axpy(1e-3, noise, params)

    def eager(p):
        return curvature.top_eigenpairs(loss_fn, p, data, k=1, num_iters=30, key=key)

    jitted = jax.jit(
        lambda p, d: curvature.top_eigenpairs(loss_fn, p, d, k=1, num_iters=30, key=key)
    )

    def bare(p, v, d):
        def body(_, u):
            hu = curvature.hvp(loss_fn, p, u, d)
            return tree.scale(1.0 / tree.norm(hu), hu)

        return jax.lax.fori_loop(0, 31, body, v)

    bare_jit = jax.jit(bare)
    v = tree.normal_like(jax.random.key(1), params)
    firsts = []
    for i in range(3):
        start = time.perf_counter()
        jax.block_until_ready(eager(perturbed(i)))
        firsts.append(time.perf_counter() - start)
    print(f"   eager calls 1-3 with new parameters: {', '.join(f'{t:.2f} s' for t in firsts)}")
    reference = float(
        jax.jit(lambda p, d: curvature.top_eigenpairs(loss_fn, p, d, k=1, num_iters=100, key=key))(
            params, data
        ).eigenvalues[0]
    )
    lam30 = float(eager(params).eigenvalues[0])
    print(
        f"   lambda_max {reference:.6g} (100 steps); 30 steps: relative error "
        f"{abs(lam30 - reference) / reference:.1e} (target 1e-4)"
    )
    # The fewest Lanczos steps that reach 1e-4 at the reference point: the "to 1e-4".
    fewest = 30
    for m in (8, 10, 12, 15, 20):
        lam = float(
            curvature.top_eigenpairs(loss_fn, params, data, k=1, num_iters=m, key=key).eigenvalues[
                0
            ]
        )
        if abs(lam - reference) / reference < 1e-4:
            fewest = m
            break

    def eager_fewest(p):
        return curvature.top_eigenpairs(loss_fn, p, data, k=1, num_iters=fewest, key=key)

    print(f"   fewest Lanczos steps to 1e-4 (of 8, 10, 12, 15, 20, 30): {fewest}")

    worker = python = None
    if not args.no_pyhessian:
        cache = pathlib.Path(args.cache_dir)
        cache.mkdir(parents=True, exist_ok=True)
        python = pyhessian_python(cache)
    if python is not None:
        arrays = {"num_layers": len(params), "x": np.asarray(data["x"]), "y": np.asarray(data["y"])}
        for i, layer in enumerate(params):
            arrays[f"w{i}"], arrays[f"b{i}"] = np.asarray(layer["w"]), np.asarray(layer["b"])
        np.savez(cache / "fc_tanh.npz", **arrays)
        (cache / "pyhessian_worker.py").write_text(PYHESSIAN_WORKER)
        worker = subprocess.Popen(
            [str(python), str(cache / "pyhessian_worker.py"), str(cache / "fc_tanh.npz")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        info = json.loads(worker.stdout.readline())
        print(f"   comparison: {info['kind']}, torch {info['torch']}, {info['threads']} threads")
    else:
        print("   PyHessian comparison skipped")

    times = {"eager": [], "eager_fewest": [], "jit": [], "hvp": [], "pyhessian": []}
    values = []
    jax.block_until_ready(jitted(params, data))
    jax.block_until_ready(bare_jit(params, v, data))
    for r in range(max(args.pyhessian_starts, args.repeats)):
        p = perturbed(10 + r)
        for name, call in (
            ("eager", lambda: eager(p)),
            ("eager_fewest", lambda: eager_fewest(p)),
            ("jit", lambda: jitted(p, data)),
            ("hvp", lambda: bare_jit(p, v, data)),
        ):
            start = time.perf_counter()
            jax.block_until_ready(call())
            times[name].append(time.perf_counter() - start)
        if worker is not None and r < args.pyhessian_starts:
            worker.stdin.write(f"{r}\n")
            worker.stdin.flush()
            out = json.loads(worker.stdout.readline())
            times["pyhessian"].append(out["time"])
            values.append(out["eigenvalue"])
    med = {k: statistics.median(t) for k, t in times.items() if t}
    print(
        f"   eager (3rd call on) / jitted: {med['eager']:.2f} s / {med['jit']:.2f} s = "
        f"{med['eager'] / med['jit']:.2f}x (target <= 1.3x); / 31 bare HVPs {med['hvp']:.2f} s = "
        f"{med['eager'] / med['hvp']:.2f}x (target <= 1.3x)"
    )
    if worker is not None:
        worker.stdin.close()
        worker.wait()
        print(
            f"   PyHessian (tol 1e-6), median of {len(times['pyhessian'])} random starts: "
            f"{med['pyhessian']:.2f} s (range {min(times['pyhessian']):.2f}-"
            f"{max(times['pyhessian']):.2f} s; eigenvalues "
            f"{', '.join(f'{x:.6g}' for x in values)}): eager is "
            f"{med['pyhessian'] / med['eager']:.2f}x faster at 30 steps; at {fewest} steps "
            f"({med['eager_fewest']:.2f} s) {med['pyhessian'] / med['eager_fewest']:.2f}x "
            f"(target >= 3x)"
        )


if __name__ == "__main__":
    main()
