"""Three processes from one start: the discrete optimizer, its central flow and its stable flow.

:func:`simulate` yields one record per optimizer step t with each process's loss and (effective)
sharpness, the central flow's predicted time-averaged loss, edge eigenvalues and oscillation
variances, and the distances between the processes. The central flow *is* the stable flow until
its correction switches on: at every step it tries its own substeps from the stable state and
keeps them only once they carry an oscillation (X != 0), so before that step the two are the same
computation. :func:`run` builds the model and data from a config (``dynamics.data``,
``dynamics.models``, ``dynamics.losses``), writes ``metrics.jsonl`` record by record, then
``summary.json`` (the acceptance numbers of :func:`analyze`) and the figure
``plots/central_flows.png`` (``dynamics.flows.plots``).

Example:
  python -m experiments.run --config=configs/central_flows.py:gd_digits
"""

from __future__ import annotations

import pathlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dynamics.curvature import tree
from dynamics.flows import edge
from dynamics.flows.central import CentralFlow, random_basis
from dynamics.flows.optimizers import Optimizer
from dynamics.flows.stable import StableFlow
from dynamics.registry import ConfigError

PyTree = Any
FLOW_KEYS = (
    "k",
    "num_iters",
    "dt",
    "band",
    "solver_iters",
    "smoothing",
    "max_sharpness",
)


def _distance(a: PyTree, b: PyTree) -> float:
    return float(tree.norm(tree.sub(a, b)))


def simulate(
    loss_fn: Callable[..., jax.Array],
    opt: Optimizer,
    params: PyTree,
    batch: Any,
    num_steps: int,
    *,
    max_sharpness: float = 20.0,
    seed: int = 0,
    **central_options,
) -> Iterator[dict]:
    """Yields the record of steps 0..num_steps (see the module doc).

    ``central_options`` are :class:`CentralFlow`'s keyword arguments (``k``, ``num_iters``,
    ``dt``, ``band``, ``solver_iters``). ``max_sharpness``: the stable flow stops once its
    effective sharpness exceeds this many times the threshold (its records then omit the stable
    keys). The top ``k`` eigenvalues of the discrete and stable processes are recorded too
    (warm-started Lanczos, ``num_iters`` products).
    """
    central = CentralFlow(loss_fn, opt, **central_options)
    k, num_iters = central.k, central.num_iters
    key = jax.random.key(seed)
    grads0 = jax.grad(loss_fn)(params, batch)
    start = opt.initial_state(params, grads0)
    tx = opt.transform()

    @jax.jit
    def gd_step(p, s):
        loss, g = jax.value_and_grad(loss_fn)(p, batch)
        updates, s = tx.update(g, s, p)
        return optax.apply_updates(p, updates), s, loss

    @jax.jit
    def spectrum(state, key, init):
        p = opt.preconditioner(state) if opt.adaptive else None
        pairs = edge.eigenpairs(
            loss_fn, state["w"], p, batch, k=k, num_iters=num_iters, key=key, init=init
        )
        return pairs.eigenvalues, pairs.eigenvectors, loss_fn(state["w"], batch)

    @jax.jit
    def offsets(state, vectors, gd_w):
        """GD's displacement from the central flow in the basis of its edge directions:
        c_i = q_i . P^1/2 (w_GD - w), so that w_GD - w = sum_i c_i a_i on their span."""
        root = jax.tree.map(jnp.sqrt, opt.preconditioner(state))
        x = tree.mul(root, tree.sub(gd_w, state["w"]))
        return jax.vmap(lambda q: tree.vdot(q, x))(vectors)

    def gd_state(p, s):
        if not opt.adaptive:
            return {"w": p}
        from dynamics.curvature.preconditioned import find_state

        return {"w": p, "nu": find_state(s, optax.ScaleByRmsState).nu}

    stable = StableFlow(loss_fn, opt)
    gd_params, gd_opt = params, opt.discrete_state(params, grads0)
    stable_state = start
    # One compiled eigen-solver for the three processes: always warm-started, from k random
    # orthonormal vectors at step 0.
    vec_gd = vec_stable = random_basis(jax.random.fold_in(key, 1), params, k)
    cs = central.init(start, key, vec_gd)
    handed_off = False
    stable_alive = True
    for step in range(num_steps + 1):
        keys = jax.random.split(jax.random.fold_in(key, step + 2), 3)
        record: dict[str, Any] = {"step": step}
        gd_eigs, vec_gd, gd_loss = spectrum(gd_state(gd_params, gd_opt), keys[0], vec_gd)
        record.update(gd_loss=float(gd_loss), gd_sharpness=float(gd_eigs[0]))
        record["gd_eigenvalues"] = np.asarray(gd_eigs).tolist()
        if stable_alive:
            st_eigs, vec_stable, st_loss = spectrum(stable_state, keys[1], vec_stable)
            record.update(stable_loss=float(st_loss), stable_sharpness=float(st_eigs[0]))
            record["dist_stable_gd"] = _distance(stable_state["w"], gd_params)
            record["dist_stable_start"] = _distance(stable_state["w"], params)
        if not handed_off:
            cs = cs._replace(state=stable_state)
        new_cs, info = central.advance(cs, keys[2], batch)
        record.update(
            central_loss=float(info.loss),
            central_predicted_loss=float(info.predicted_loss),
            central_sharpness=float(info.eigenvalues[0]),
            central_eigenvalues=np.asarray(info.eigenvalues).tolist(),
            central_variances=np.asarray(info.variances).tolist(),
            central_active=int(np.sum(info.active)),
            central_full=bool(info.full),
            central_gap=float(info.gap),
            central_on=bool(handed_off),
            dist_central_gd=_distance(cs.state["w"], gd_params),
            gd_offsets=np.asarray(offsets(cs.state, new_cs.vectors, gd_params)).tolist(),
        )
        if stable_alive:
            record["dist_central_stable"] = _distance(cs.state["w"], stable_state["w"])
        record["sharpness_threshold"] = opt.threshold
        yield record
        if step == num_steps:
            return
        # The correction switches on at the first step whose substeps carry an oscillation.
        if not handed_off and (bool(jnp.any(info.variances > 0)) or bool(jnp.any(new_cs.x > 0))):
            handed_off = True
        cs = new_cs
        gd_params, gd_opt, _ = gd_step(gd_params, gd_opt)
        if stable_alive:
            stable_state = stable.advance(stable_state, float(step), batch)
            stable_alive = record["stable_sharpness"] <= max_sharpness * opt.threshold


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Centered moving average over ``window`` steps (shorter windows at the ends)."""
    values = np.asarray(values, float)
    half = window // 2
    cumsum = np.concatenate([[0.0], np.cumsum(values)])
    lo = np.clip(np.arange(len(values)) - half, 0, len(values))
    hi = np.clip(np.arange(len(values)) + half + 1, 0, len(values))
    return (cumsum[hi] - cumsum[lo]) / (hi - lo)


def analyze(records: list[dict], threshold: float, smoothing: int = 20, delay: int = 150) -> dict:
    """The acceptance numbers of a run (see ``docs/experiments.md``).

    * ``first_crossing``: first step with GD's sharpness >= threshold; ``correction_on``: first
      step the central flow carries an oscillation.
    * ``pre_max_dist_central_stable``; ``pre_max_rel_dist_gd_stable``: before ``correction_on``,
      the largest ||w_central - w_stable|| and ||w_GD - w_stable|| / ||w_stable - w_0||.
    * ``central_sharpness_max_rel``, ``..._median_rel``: |S - T| / T of the central flow while on.
    * ``second_eigenvalue_held_max_rel``: the same for the second eigenvalue once it is active.
    * ``loss_error_central`` / ``loss_error_stable``: median relative error against GD's loss
      smoothed over ``smoothing`` steps, from ``delay`` steps after the first crossing
      (``..._from_crossing`` from the crossing, ``..._last300`` over the last 300 steps).
    * ``final_dist_central_gd`` / ``final_dist_stable_gd`` and their ratio.
    * ``variance_ratio_top_median``: GD's measured oscillation variance along the top edge
      direction (its offset from the central flow squared, smoothed) over the predicted X_11.
    """
    steps = np.array([r["step"] for r in records])
    gd_s = np.array([r["gd_sharpness"] for r in records])
    crossing = int(steps[np.argmax(gd_s >= threshold)]) if np.any(gd_s >= threshold) else None
    on = np.array([r["central_on"] for r in records])
    correction_on = int(steps[np.argmax(on)]) if np.any(on) else None
    out: dict[str, Any] = {"first_crossing": crossing, "correction_on": correction_on}
    pre = ~on
    out["pre_max_dist_central_stable"] = float(
        max((r.get("dist_central_stable", 0.0) for r, p in zip(records, pre, strict=True) if p),
            default=0.0)
    )  # fmt: skip
    rel = [
        r["dist_stable_gd"] / r["dist_stable_start"]
        for r, p in zip(records, pre, strict=True)
        if p and "dist_stable_gd" in r and r["dist_stable_start"] > 0
    ]
    out["pre_max_rel_dist_gd_stable"] = float(max(rel, default=0.0))
    # From step 50 on: the first steps' ratio is the O(lr) difference of one GD step from the
    # flow over a distance that is itself one step.
    out["pre_max_rel_dist_gd_stable_from_50"] = float(max(rel[50:])) if len(rel) > 50 else None
    if rel:
        out["pre_rel_dist_gd_stable_at_switch"] = float(rel[-1])
    if correction_on is not None:
        cen = np.array([r["central_sharpness"] for r in records])[on]
        dev = np.abs(cen - threshold) / threshold
        out["central_sharpness_max_rel"] = float(dev.max())
        out["central_sharpness_median_rel"] = float(np.median(dev))
        eig2 = np.array([r["central_eigenvalues"][1] for r in records])
        reached = eig2 >= threshold * (1 - 0.005)
        if np.any(reached):
            first2 = int(np.argmax(reached))
            out["second_eigenvalue_reaches"] = int(steps[first2])
            out["second_eigenvalue_held_max_rel"] = float(
                np.max(np.abs(eig2[first2:] - threshold) / threshold)
            )
        out["max_active"] = int(max(r["central_active"] for r in records))
    gd_smooth = smooth([r["gd_loss"] for r in records], smoothing)
    pred = np.array([r["central_predicted_loss"] for r in records])
    has_stable = np.array(["stable_loss" in r for r in records])
    st = np.array([r.get("stable_loss", np.nan) for r in records])

    def err(values, mask):
        return float(np.nanmedian(np.abs(values[mask] - gd_smooth[mask]) / gd_smooth[mask]))

    if crossing is not None:
        windows = {
            "": steps >= crossing + delay,
            "_from_crossing": steps >= crossing,
            "_last300": steps > steps[-1] - 300,
        }
        for suffix, mask in windows.items():
            if np.any(mask):
                out["loss_error_central" + suffix] = err(pred, mask)
                if np.any(mask & has_stable):
                    out["loss_error_stable" + suffix] = err(st, mask & has_stable)
    if crossing is not None and "gd_offsets" in records[0]:
        # The predicted oscillation variance X_ii against GD's measured (c_i^2, smoothed), for
        # the top direction, from `delay` steps after the crossing.
        mask = steps >= crossing + delay
        measured = smooth([r["gd_offsets"][0] ** 2 for r in records], smoothing)
        predicted = smooth([r["central_variances"][0] for r in records], smoothing)
        keep = mask & (predicted > 0)
        if np.any(keep):
            out["variance_ratio_top_median"] = float(np.median(measured[keep] / predicted[keep]))
    last = records[-1]
    out["final_dist_central_gd"] = last["dist_central_gd"]
    if "dist_stable_gd" in last:
        out["final_dist_stable_gd"] = last["dist_stable_gd"]
        out["final_dist_ratio"] = last["dist_central_gd"] / last["dist_stable_gd"]
    out["stable_stopped_at"] = next((r["step"] for r in records if "stable_loss" not in r), None)
    return out


def flow_kwargs(config) -> dict:
    """The ``flows`` section of a config as :func:`simulate` keyword arguments."""
    kwargs = {k: config.flows[k] for k in FLOW_KEYS if k in config.flows}
    kwargs.pop("smoothing", None)
    return kwargs


def check(config) -> None:
    """Raises ConfigError for a config this program cannot run (before anything is written)."""
    name = config.optimizer.name
    if name not in ("sgd", "rmsprop"):
        raise ConfigError(
            f"optimizer.name {name!r} has no central flow here; valid choices: sgd, rmsprop"
        )
    unknown = sorted(set(config.flows.keys()) - set(FLOW_KEYS))
    if unknown:
        raise ConfigError(
            f"unknown field flows.{unknown[0]}; valid choices: {', '.join(FLOW_KEYS)}"
        )
    if config.data.batch_size:
        raise ConfigError("data.batch_size must be None: central flows model full-batch training")
    extra = {k: v for k, v in config.optimizer.items() if k not in ("name", "learning_rate")}
    allowed = {"schedule", "filter", "constraint"} | (
        {"decay", "eps"} if name == "rmsprop" else set()
    )
    bad = sorted(set(extra) - allowed)
    if bad:
        raise ConfigError(f"unknown field optimizer.{bad[0]} for {name!r}")
    if config.optimizer.schedule.name != "constant":
        raise ConfigError("optimizer.schedule.name must be 'constant' for central flows")
    for part in ("filter", "constraint"):
        if config.optimizer[part].name is not None:
            raise ConfigError(f"optimizer.{part}.name must be None: central flows model plain GD")
    try:
        kwargs = flow_kwargs(config)
        kwargs.pop("max_sharpness", None)
        CentralFlow(lambda w: w, Optimizer(name, 1.0), **kwargs)
    except ValueError as e:
        raise ConfigError(f"flows: {e}") from e


def _optimizer(config) -> Optimizer:
    kwargs = {k: config.optimizer[k] for k in ("decay", "eps") if k in config.optimizer}
    return Optimizer(config.optimizer.name, float(config.optimizer.learning_rate), **kwargs)


def problem(config) -> tuple[Callable[..., jax.Array], Optimizer, PyTree, dict]:
    """``(loss_fn, optimizer, params, batch)`` of a config: its dataset's full training set, its
    model initialized from ``config.seed``, the mean of its loss. Call under
    ``jax.enable_x64(config.precision == "float64")``."""
    from dynamics.data import load_dataset
    from dynamics.losses import LOSSES
    from dynamics.models import build_model
    from dynamics.train.config import section_kwargs

    dtype = jnp.float64 if config.precision == "float64" else jnp.float32
    data = load_dataset(config.data.to_dict(), config.seed)
    model = build_model(config.model.to_dict(), data.spec)
    per_example = LOSSES.build(config.loss.name, section_kwargs(config, "loss"), where="loss")
    batch = {"x": jnp.asarray(data.train["x"], dtype), "y": jnp.asarray(data.train["y"])}
    if jnp.issubdtype(batch["y"].dtype, jnp.floating):
        batch["y"] = batch["y"].astype(dtype)
    params = model.init(jax.random.key(config.seed), batch["x"][:1])

    def loss_fn(p, b):
        return jnp.mean(per_example(model.apply(p, b["x"]), b["y"]))

    return loss_fn, _optimizer(config), params, batch


def run(config, workdir) -> dict:
    """Runs the three processes of ``config`` into ``workdir`` (see the module doc)."""
    from dynamics.flows.plots import plot_flows
    from dynamics.train import summary as summaries
    from dynamics.train.metrics import MetricWriter

    workdir = pathlib.Path(workdir)
    start = time.perf_counter()
    with jax.enable_x64(config.precision == "float64"):
        loss_fn, opt, params, batch = problem(config)
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "config.json").write_text(config.to_json(indent=2))
        records = []
        with MetricWriter(workdir / "metrics.jsonl") as writer:
            for record in simulate(
                loss_fn, opt, params, batch, config.num_steps, seed=config.seed,
                **flow_kwargs(config),
            ):  # fmt: skip
                records.append(writer.write(record))
        wall = time.perf_counter() - start
        smoothing = int(config.flows.get("smoothing", 20))
        analysis = analyze(records, opt.threshold, smoothing)
        plots_dir = workdir / "plots"
        plots_dir.mkdir(exist_ok=True)
        plot_flows(records, opt.threshold, smoothing, plots_dir / "central_flows.png")
        summary = summaries.build(
            config,
            records,
            status="completed",
            step=config.num_steps,
            wall_time_s=wall,
            analysis=analysis,
        )
        summaries.write(workdir, summary)
    return summary
