"""Scalar networks: the sharpness of the gradient-flow solution (GFS) along gradient descent.

A scalar network of depth ``D`` computes ``f(x) = x * prod_i w_i``; on one datum ``(x, y)`` with
the squared loss

    L(w) = 0.5 * (x * prod_i w_i - y)^2

the gradient is ``dL/dw_i = r * x * prod_{j != i} w_j`` with residual ``r = x prod w - y``.

**Conserved quantities.** Under gradient flow ``dw/dt = -grad L``,
``d(w_i^2)/dt = -2 r x prod_j w_j`` is the same for every ``i``, so the differences
``w_i^2 - w_j^2`` are conserved. The gradient-flow solution (GFS) started at ``w`` is therefore

    w_i* = sign(w_i) * sqrt(w_i^2 + c),   with c > -min_i w_i^2 solving prod_i (w_i^2 + c) = (y/x)^2

(the smallest weight changes sign when the flow has to cross zero to reach the sign of ``y/x``).
``g(c) = sum_i log(w_i^2 + c) - log((y/x)^2)`` is increasing and concave in ``c``, which makes
the root unique and a bracketed Newton iteration safe.

**GFS sharpness.** At a minimum the Hessian of ``L`` is ``x^2 grad(prod w) grad(prod w)^T``
(rank one; the residual term vanishes), so its only non-zero eigenvalue is

    S(w) = x^2 * (y/x)^2 * sum_i 1/w_i*^2 = y^2 * sum_i 1/w_i*^2.

This is the formula of Kreisler et al. (2023) and it belongs to the loss *with* the 1/2: with
``(f - y)^2`` every Hessian doubles. GD ``w <- w - lr grad L`` is linearly stable at a minimum iff
``lr * lambda_max(Hessian of the loss it descends) <= 2``, so the 2/lr threshold is compared with
the sharpness of the same loss GD uses; the 1/2 convention here is also the project's MSE.
The flattest minimum is the balanced one, ``w_i^2 = |y/x|^(2/D)``, with sharpness
``D * y^2 * |y/x|^(-2/D)`` (``D y^(2 - 2/D)`` for ``x = 1``); GD can only converge when
``2/lr`` is above it.

**The theorem** (Kreisler, Shpigel Nacson, Soudry, Carmon 2023, "Gradient Descent Monotonically
Decreases the Sharpness of Gradient Flow Solutions in Scalar Networks and Beyond"): under their
assumptions on the initialization and step size, the GFS sharpness ``S(w_t)`` is non-increasing
along GD, and GD converges to a minimum with sharpness at most (and, when started sharper, close
to) ``2/lr`` -- the edge of stability. A step large enough to flip the sign of a weight is outside
the assumptions; then ``S`` can jump up.

Everything here is pure JAX and runs in the precision of its inputs; run it in float64 (inside
``with jax.enable_x64(True):``) because the monotone decrease is checked to ~1e-12 relative.

Example::

  import jax, jax.numpy as jnp
  from dynamics.analysis import scalar
  with jax.enable_x64(True):
    w0 = jnp.array([1.3, 1.0, 0.8], jnp.float64) * 1.01
    y, lr = 1.3 * 0.8, 0.35
    traj = scalar.gradient_descent(w0, y, 1.0, lr, 500)
    print(scalar.gfs_summary(traj["gfs_sharpness"], lr))
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from dynamics.analysis import ANALYSES


def network_output(w: jax.Array, x: float = 1.0) -> jax.Array:
    """``f(x) = x * prod_i w_i``."""
    return x * jnp.prod(w)


def loss(w: jax.Array, y: float, x: float = 1.0) -> jax.Array:
    """``0.5 * (x prod_i w_i - y)^2``: the squared loss on one datum."""
    return 0.5 * (network_output(w, x) - y) ** 2


def gradient(w: jax.Array, y: float, x: float = 1.0) -> jax.Array:
    """``r x prod_{j != i} w_j`` from exclusive left/right products (no division by ``w_i``)."""
    ones = jnp.ones((1,), w.dtype)
    left = jnp.concatenate([ones, jnp.cumprod(w)[:-1]])
    right = jnp.concatenate([jnp.cumprod(w[::-1])[:-1][::-1], ones])
    residual = network_output(w, x) - y
    return residual * x * left * right


@functools.partial(jax.jit, static_argnames="num_iterations")
def gfs_shift(w: jax.Array, y: float, x: float = 1.0, num_iterations: int = 80) -> jax.Array:
    """The ``c`` with ``prod_i (w_i^2 + c) = (y/x)^2`` and ``c > -min_i w_i^2``.

    Bracketed Newton on ``g(c) = sum_i log(w_i^2 + c) - log((y/x)^2)``: ``g`` rises from ``-inf``
    at ``c = -min w^2`` and is concave, so the root is unique and lies in
    ``[-min w^2, max(0, |y/x|^(2/D) - min w^2)]`` (at the right end every factor is at least
    ``|y/x|^(2/D)``). A Newton step that leaves the bracket is replaced by bisection; the bracket
    shrinks every iteration, so a fixed number of iterations reaches machine precision.
    """
    sq = w**2
    depth = w.shape[0]
    target = 2.0 * jnp.log(jnp.abs(y / x))
    m = jnp.min(sq)
    lo = -m
    hi = jnp.maximum(0.0, jnp.abs(y / x) ** (2.0 / depth) - m)

    def g_and_slope(c):
        shifted = sq + c
        return jnp.sum(jnp.log(shifted)) - target, jnp.sum(1.0 / shifted)

    def body(_, carry):
        lo, hi, c = carry
        g, slope = g_and_slope(c)
        lo = jnp.where(g < 0, c, lo)
        hi = jnp.where(g >= 0, c, hi)
        newton = c - g / slope
        inside = (newton > lo) & (newton < hi) & jnp.isfinite(newton)
        return lo, hi, jnp.where(inside, newton, 0.5 * (lo + hi))

    _, _, c = jax.lax.fori_loop(0, num_iterations, body, (lo, hi, 0.5 * (lo + hi)))
    return c


@jax.jit
def gfs_solution(w: jax.Array, y: float, x: float = 1.0) -> jax.Array:
    """The minimum gradient flow reaches from ``w``: ``sign(w_i) sqrt(w_i^2 + c)``.

    When ``sign(prod w) != sign(y/x)`` the flow passes through zero: the smallest weight flips.
    """
    w_star = jnp.sign(w) * jnp.sqrt(w**2 + gfs_shift(w, y, x))
    wrong_sign = jnp.sign(jnp.prod(w)) != jnp.sign(y / x)
    flip = jnp.where(wrong_sign & (jnp.arange(w.shape[0]) == jnp.argmin(jnp.abs(w))), -1.0, 1.0)
    return w_star * flip


@jax.jit
def gfs_sharpness(w: jax.Array, y: float, x: float = 1.0) -> jax.Array:
    """``y^2 sum_i 1/(w_i^2 + c)``: the top Hessian eigenvalue of the loss at the GF solution."""
    return y**2 * jnp.sum(1.0 / (w**2 + gfs_shift(w, y, x)))


def flattest_sharpness(depth: int, y: float, x: float = 1.0) -> float:
    """``D y^2 |y/x|^(-2/D)``: the sharpness of the balanced minimum, the flattest one."""
    return depth * y**2 * abs(y / x) ** (-2.0 / depth)


@functools.partial(jax.jit, static_argnames="num_steps")
def gradient_descent(
    w0: jax.Array, y: float, x: float, learning_rate: float, num_steps: int
) -> dict[str, jax.Array]:
    """Full-batch GD on the scalar network, with the GFS sharpness at every iterate.

    Returns ``weights [T+1, D]``, ``loss [T+1]`` and ``gfs_sharpness [T+1]`` (index 0 is ``w0``),
    in the dtype of ``w0``; one ``lax.scan``, no host syncs.
    """

    def step(w, _):
        w_next = w - learning_rate * gradient(w, y, x)
        return w_next, w_next

    _, ws = jax.lax.scan(step, w0, None, length=num_steps)
    weights = jnp.concatenate([w0[None], ws])
    return {
        "weights": weights,
        "loss": jax.vmap(lambda w: loss(w, y, x))(weights),
        "gfs_sharpness": jax.vmap(lambda w: gfs_sharpness(w, y, x))(weights),
    }


@functools.partial(jax.jit, static_argnames="num_steps")
def gradient_flow(w0: jax.Array, y: float, x: float, time: float, num_steps: int) -> jax.Array:
    """Integrates ``dw/dt = -grad L`` to ``time`` with classical RK4 (fixed step ``time/n``).

    An independent route to the GF solution: its end point should match :func:`gfs_solution`.
    Keep ``time / num_steps`` well below ``2.8 / S`` (RK4's stability limit on the sharpness).
    """
    h = time / num_steps

    def f(w):
        return -gradient(w, y, x)

    def step(w, _):
        k1 = f(w)
        k2 = f(w + 0.5 * h * k1)
        k3 = f(w + 0.5 * h * k2)
        k4 = f(w + h * k3)
        return w + h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4), None

    w, _ = jax.lax.scan(step, w0, None, length=num_steps)
    return w


def gfs_summary(gfs: jax.Array, learning_rate: float) -> dict[str, float]:
    """Summary of a GFS-sharpness trajectory against the GD threshold ``2/lr``.

    ``max_relative_increase`` is ``max_t (S_{t+1} - S_t) / S_t`` (<= 0 when monotone; the
    theorem says it never exceeds rounding), ``final_over_threshold`` is ``S_T / (2/lr)``.
    """
    gfs = np.asarray(gfs, np.float64)
    threshold = 2.0 / learning_rate
    increase = (gfs[1:] - gfs[:-1]) / gfs[:-1]
    return {
        "gfs_sharpness_initial": float(gfs[0]),
        "gfs_sharpness_final": float(gfs[-1]),
        "gfs_threshold": threshold,
        "gfs_final_over_threshold": float(gfs[-1] / threshold),
        "gfs_max_relative_increase": float(np.max(increase)),
        "gfs_step_of_max_increase": int(np.argmax(increase)) + 1,
    }


def _datum(config) -> tuple[float, float]:
    """The run's one training example ``(x, y)`` as Python floats (exact float64 copies)."""
    from dynamics.data import load_dataset

    train = load_dataset(config.data, config.seed).train
    if train["x"].size != 1 or train["y"].size != 1:
        raise ValueError("scalar_gfs needs a dataset with one scalar training example")
    return float(train["x"].reshape(())), float(train["y"].reshape(()))


def plot_gfs(traj: dict, learning_rate: float, flattest: float, path) -> None:
    """GFS sharpness with ``2/lr`` and the flattest minimum's sharpness; the loss (log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_s, ax_l) = plt.subplots(1, 2, figsize=(10, 3.6))
    steps = np.arange(len(traj["loss"]))
    ax_s.plot(steps, traj["gfs_sharpness"], label="GFS sharpness")
    ax_s.axhline(2.0 / learning_rate, ls="--", color="k", lw=1, label="2/lr")
    ax_s.axhline(flattest, ls=":", color="gray", lw=1, label="flattest minimum")
    ax_s.set_xscale("symlog", linthresh=10)
    ax_s.set_xlabel("step")
    ax_s.legend(fontsize=8)
    ax_l.plot(steps, np.maximum(np.asarray(traj["loss"]), 1e-300))
    ax_l.set_yscale("log")
    ax_l.set_xscale("symlog", linthresh=10)
    ax_l.set_xlabel("step")
    ax_l.set_ylabel("loss")
    for ax in (ax_s, ax_l):
        ax.set_xlim(0, len(steps))
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


@ANALYSES.register("scalar_gfs")
def scalar_gfs(records, config, plots_dir) -> dict:
    """Float64 GD on the run's scalar network and datum, with the GFS sharpness every step.

    Independent of the runner's precision: GD is re-run here in float64 from
    ``config.model.init_weights`` with ``config.optimizer.learning_rate`` (plain GD, constant
    lr) for ``config.num_steps`` steps; ``runner_loss_max_rel_diff`` compares its losses
    with the run's logged ``loss`` (the loss of the parameters *before* each logged step's
    update, as the runner logs it) where that loss is above 1e-10. The end point is
    cross-checked twice: RK4 gradient flow from the last iterate against the closed-form GF
    solution, and Lanczos (``dynamics.curvature.top_eigenpairs``) on the Hessian at that
    solution against ``S``.
    Writes ``plots/scalar_gfs.png``.
    """
    from dynamics.curvature import top_eigenpairs

    if config.optimizer.name != "sgd" or config.optimizer.schedule.name != "constant":
        raise ValueError("scalar_gfs re-runs plain GD: optimizer sgd with a constant lr")
    x, y = _datum(config)
    lr = float(config.optimizer.learning_rate)
    with jax.enable_x64(True):
        w0 = jnp.asarray(config.model.init_weights, jnp.float64)
        traj = gradient_descent(w0, y, x, lr, int(config.num_steps))
        traj = {k: np.asarray(v) for k, v in traj.items()}
        w_end = jnp.asarray(traj["weights"][-1])
        w_star = gfs_solution(w_end, y, x)
        sharp_end = float(gfs_sharpness(w_end, y, x))
        time = 50.0 / sharp_end
        w_flow = gradient_flow(w_end, y, x, time, 20000)
        eig = top_eigenpairs(
            lambda w, b: jnp.mean(0.5 * (b["x"] * jnp.prod(w) - b["y"]) ** 2),
            w_star,
            {"x": jnp.array([x]), "y": jnp.array([y])},
            k=1,
            num_iters=len(w0),
            key=jax.random.key(0),
            precision=None,
        )
        lanczos_top = float(eig[0][0])
    summary = gfs_summary(traj["gfs_sharpness"], lr)
    summary |= {
        "depth": len(w0),
        "x": x,
        "y": y,
        "learning_rate": lr,
        "flattest_sharpness": flattest_sharpness(len(w0), y, x),
        "final_loss": float(traj["loss"][-1]),
        "sign_changes_first_step": int(np.sum(np.sign(traj["weights"][1]) != np.sign(w0))),
        "gradient_flow_vs_closed_form": float(np.max(np.abs(np.asarray(w_flow - w_star)))),
        "lanczos_vs_gfs_sharpness": abs(lanczos_top - sharp_end) / sharp_end,
    }
    logged = [(r["step"], r["loss"]) for r in records if "loss" in r]
    if logged:
        steps, values = (np.asarray(a) for a in zip(*logged, strict=True))
        # Relative differences of losses near 0 measure rounding, not disagreement.
        ok = (steps <= config.num_steps) & (steps >= 1)
        ok[ok] &= traj["loss"][steps[ok] - 1] > 1e-10
        ref = traj["loss"][steps[ok] - 1]
        diff = np.abs(values[ok] - ref) / np.maximum(np.abs(ref), 1e-300)
        summary["runner_loss_max_rel_diff"] = float(np.max(diff))
    plot_gfs(traj, lr, summary["flattest_sharpness"], plots_dir / "scalar_gfs.png")
    return summary
