"""Curvature probes: sharpness, preconditioned sharpness, spectral density, trace, subspace overlap
and the stability of the optimizer step, computed with :mod:`dynamics.curvature`.

Every probe works on the first ``num_examples`` training examples (None: all of them) and
accumulates Hessian-vector products over microbatches of ``microbatch_size`` (None: one batch), at
matmul ``precision`` (``"highest"``: true fp32 on GPUs). Randomness is a pure function of
``(config.seed, step)``, and warm-start eigenvectors are probe state saved in checkpoints, so a
resumed run logs the same numbers.

* ``sharpness(every, k=2, num_iters=30, ...)``: top-k Hessian eigenvalues ``sharpness``,
  ``sharpness_2``, ..., their residuals ``sharpness_residual``, ``sharpness_2_residual``, ..., and
  ``sharpness_threshold`` from the optimizer config when a linear-stability threshold is known:
  GD 2/lr, heavy ball (2 + 2b)/lr, Nesterov (2 + 2b)/(lr (1 + 2b)), unnormalized SAM
  (sqrt(1 + 8 rho/lr) - 1)/(2 rho) (on plain GD, no filter or constraint). Warm-started from the
  previous eigenvectors.
* ``preconditioned_sharpness(every, k=1, ...)``: top eigenvalues of P^-1/2 H P^-1/2 with P read
  from the optimizer state (Adam/AdamW: bias-corrected sqrt(nu) + eps; RMSProp: optax's
  sqrt(nu + eps)), and ``preconditioned_sharpness_threshold`` = (2 + 2 b1)/((1 - b1) lr) for the
  Adam family, 2/lr for RMSProp.
* ``spectral_density(every, steps=None, num_probes=4, num_iters=40, num_points=256, ...)``: SLQ
  density as lists ``spectral_density_grid``, ``spectral_density``, plus the raw
  ``spectral_density_nodes`` and ``spectral_density_weights``; with ``steps``, exactly at those
  steps (``every`` is then unused), e.g. ``steps=(0, 1000, 5000)``.
* ``hessian_trace(every, num_probes=30, method="hutch++", ...)``: ``hessian_trace`` and
  ``hessian_trace_stderr``.
* ``gradient_overlap(every, k=10, ...)``: fractions of the gradient and of the optimizer update
  inside the top-k Hessian eigenspace (``gradient_overlap``, ``update_overlap``) and the overlap of
  that eigenspace with the previous probe's (``eigenspace_overlap``, from the second call on).
* ``step_stability(every, k=1, num_iters=20, ...)``: the spectral radius of the Jacobian of one
  full-batch optimizer step (parameters and optimizer state) ``step_stability``, and the largest
  multiplier with negative real part ``step_stability_flip`` (the oscillating mode that crosses
  -1 at the edge of stability; see :class:`dynamics.curvature.StepStability`), each with its
  threshold 1.

``sharpness``, ``hessian_trace`` and ``spectral_density`` take ``blocks=`` (``"layers"``, a
mapping of names to path patterns, or a list of patterns) and then also log the same quantity for
the Hessian block of every parameter group, ``sharpness/Dense_0`` and so on (see
:mod:`dynamics.train.probes.blocks`).

Example (config):
  >>> import ml_collections
  >>> probes = ml_collections.ConfigDict({"sharpness": {"every": 50, "k": 2}})
"""

from __future__ import annotations

import inspect
import sys
from typing import Any

import jax
import jax.numpy as jnp

from dynamics import curvature
from dynamics.curvature import tree
from dynamics.curvature.operators import take
from dynamics.curvature.trace import ESTIMATORS
from dynamics.optim.registry import OPTIMIZERS
from dynamics.registry import ConfigError
from dynamics.train.probes.base import PROBES, Probe, ProbeContext
from dynamics.train.probes.blocks import check_blocks, run_blocks

ADAM_FAMILY = ("adam", "adamw")
MATMUL_PRECISIONS = ("highest", "high", "default", "float32", "tensorfloat32", "bfloat16")


def optimizer_kwargs(config) -> dict[str, Any]:
    """The optimizer's keyword arguments: the constructor's defaults updated by the config."""
    section = config.optimizer
    fn = OPTIMIZERS.get(section.name, where="optimizer")
    kwargs = {
        n: p.default
        for n, p in inspect.signature(fn).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    reserved = ("name", "learning_rate", "schedule", "filter", "constraint")
    kwargs.update({k: v for k, v in section.items() if k not in reserved})
    return kwargs


def _is_plain_sgd(base) -> bool:
    if isinstance(base, str):
        return base == "sgd"
    base = dict(base)
    return base.pop("name", None) == "sgd" and not base


def sharpness_threshold(config, learning_rate: float) -> float | None:
    """The stability threshold on the top Hessian eigenvalue, or None where none is known."""
    section = config.optimizer
    filter_name = section.filter.get("name") if "filter" in section else None
    constraint = section.constraint.get("name") if "constraint" in section else None
    if constraint is not None:
        return None
    kwargs = optimizer_kwargs(config)
    if filter_name is not None:
        f = {k: v for k, v in section.filter.items() if k != "name"}
        if filter_name == "sam" and f.get("normalize") is False and section.name == "sgd":
            return curvature.unnormalized_sam_threshold(learning_rate, f.get("rho", 0.05))
        return None
    if section.name == "sgd":
        return curvature.gd_threshold(learning_rate)
    if section.name == "momentum":
        return curvature.momentum_threshold(learning_rate, kwargs["momentum"])
    if section.name == "nesterov":
        return curvature.nesterov_threshold(learning_rate, kwargs["momentum"])
    if section.name == "sam" and not kwargs["normalize"] and _is_plain_sgd(kwargs["base"]):
        return curvature.unnormalized_sam_threshold(learning_rate, kwargs["rho"])
    return None


def _adaptive_preconditioner(config):
    """``(preconditioner(opt_state), threshold(lr))`` of an Adam-family or RMSProp optimizer."""
    name, kwargs = config.optimizer.name, optimizer_kwargs(config)
    if name in ADAM_FAMILY:
        return (
            lambda s: curvature.adam_preconditioner(s, b2=kwargs["b2"], eps=kwargs["eps"]),
            lambda lr: curvature.adam_threshold(lr, kwargs["b1"]),
        )
    if name == "rmsprop":
        return (
            lambda s: curvature.rmsprop_preconditioner(s, eps=kwargs["eps"]),
            curvature.gd_threshold,
        )
    raise ConfigError(
        f"probes.preconditioned_sharpness needs optimizer.name in "
        f"{', '.join((*ADAM_FAMILY, 'rmsprop'))}; got {name!r}"
    )


def _check_k(k: int, num_iters: int) -> None:
    if not 1 <= k <= num_iters:
        raise ConfigError(f"probe needs 1 <= k <= num_iters, got k={k}, num_iters={num_iters}")


class _CurvatureProbe(Probe):
    """Shared options: the data subset, microbatching, precision and per-step randomness."""

    def __init__(self, every, num_examples=None, microbatch_size=None, precision="highest"):
        super().__init__(every)
        if precision is not None and precision not in MATMUL_PRECISIONS:
            raise ConfigError(
                f"unknown matmul precision {precision!r}; valid choices: "
                + ", ".join(MATMUL_PRECISIONS)
            )
        self.num_examples = num_examples
        self.microbatch_size = microbatch_size
        self.precision = precision
        self._fn = None

    def data(self, ctx: ProbeContext):
        if self.num_examples is None:
            return ctx.train
        return take(ctx.train, self.num_examples)

    def key(self, ctx: ProbeContext, step: int) -> jax.Array:
        salt = sum(map(ord, type(self).__name__))
        return jax.random.fold_in(jax.random.fold_in(jax.random.key(ctx.config.seed), salt), step)

    def operator_args(self):
        return {"microbatch_size": self.microbatch_size, "precision": self.precision}


class _EigenProbe(_CurvatureProbe):
    """A probe built on top-k eigenpairs, warm-started from its previous eigenvectors.

    The state holds the last eigenvectors and whether there are any yet: the first call runs
    plain Lanczos from a Gaussian vector, later ones grow the Krylov space from the previous
    eigenvectors (two compilations in all). Subclasses implement
    ``compute(ctx, params, opt_state, data, init, key) -> (metrics, Eigenpairs)``.
    """

    def __init__(self, every, k, num_iters, num_examples, microbatch_size, precision):
        super().__init__(every, num_examples, microbatch_size, precision)
        _check_k(k, num_iters)
        self.k, self.num_iters = k, num_iters
        self._fns = {}

    def init(self, ctx, params):
        return {"eigenvectors": tree.basis_zeros(params, self.k), "valid": jnp.zeros((), bool)}

    def __call__(self, ctx, step, params, opt_state, probe_state):
        warm = bool(probe_state["valid"])
        if warm not in self._fns:
            if warm:
                fn = lambda p, s, d, init, key: self.compute(ctx, p, s, d, init, key)  # noqa: E731
            else:
                fn = lambda p, s, d, key: self.compute(ctx, p, s, d, None, key)  # noqa: E731
            self._fns[warm] = jax.jit(fn)
        init = (probe_state["eigenvectors"],) if warm else ()
        metrics, pairs = self._fns[warm](
            params, opt_state, self.data(ctx), *init, self.key(ctx, step)
        )
        metrics = {name: float(value) for name, value in metrics.items()}
        return metrics, {"eigenvectors": pairs.eigenvectors, "valid": jnp.ones((), bool)}

    def top_eigenpairs(self, ctx, params, data, init, key):
        return curvature.top_eigenpairs(
            ctx.loss_fn,
            params,
            data,
            k=self.k,
            num_iters=self.num_iters,
            key=key,
            init=init,
            **self.operator_args(),
        )


def _eigen_metrics(prefix: str, pairs) -> dict[str, jax.Array]:
    metrics = {}
    for i in range(pairs.eigenvalues.shape[0]):
        name = prefix if i == 0 else f"{prefix}_{i + 1}"
        metrics[name] = pairs.eigenvalues[i]
        metrics[f"{name}_residual"] = pairs.residuals[i]
    return metrics


class Sharpness(_EigenProbe):
    def __init__(
        self,
        every,
        k=2,
        num_iters=30,
        num_examples=None,
        microbatch_size=None,
        precision="highest",
        blocks=None,
    ):
        super().__init__(every, k, num_iters, num_examples, microbatch_size, precision)
        check_blocks(blocks)
        self.blocks = blocks

    def compute(self, ctx, params, opt_state, data, init, key):
        pairs = self.top_eigenpairs(ctx, params, data, init, key)
        return _eigen_metrics("sharpness", pairs), pairs

    def __call__(self, ctx, step, params, opt_state, probe_state):
        metrics, state = super().__call__(ctx, step, params, opt_state, probe_state)
        threshold = sharpness_threshold(ctx.config, float(ctx.learning_rate(step)))
        if threshold is not None:
            metrics["sharpness_threshold"] = threshold
        options = dict(k=1, num_iters=self.num_iters, **self.operator_args())
        metrics.update(run_blocks(self, ctx, step, params, "sharpness", options))
        return metrics, state


class PreconditionedSharpness(_EigenProbe):
    def __init__(
        self,
        every,
        k=1,
        num_iters=30,
        num_examples=None,
        microbatch_size=None,
        precision="highest",
    ):
        super().__init__(every, k, num_iters, num_examples, microbatch_size, precision)

    def _preconditioner(self, ctx):
        return _adaptive_preconditioner(ctx.config)

    def check(self, config):
        _adaptive_preconditioner(config)

    def compute(self, ctx, params, opt_state, data, init, key):
        preconditioner, _ = self._preconditioner(ctx)
        pairs = curvature.preconditioned_sharpness(
            ctx.loss_fn,
            params,
            preconditioner(opt_state),
            data,
            k=self.k,
            num_iters=self.num_iters,
            key=key,
            init=init,
            **self.operator_args(),
        )
        return _eigen_metrics("preconditioned_sharpness", pairs), pairs

    def __call__(self, ctx, step, params, opt_state, probe_state):
        metrics, state = super().__call__(ctx, step, params, opt_state, probe_state)
        _, threshold = self._preconditioner(ctx)
        metrics["preconditioned_sharpness_threshold"] = threshold(float(ctx.learning_rate(step)))
        return metrics, state


class SpectralDensity(_CurvatureProbe):
    def __init__(
        self,
        every,
        steps=None,
        num_probes=4,
        num_iters=40,
        num_points=256,
        sigma=None,
        num_examples=None,
        microbatch_size=None,
        precision="highest",
        blocks=None,
    ):
        super().__init__(every, num_examples, microbatch_size, precision)
        check_blocks(blocks)
        self.blocks = blocks
        self.steps = None if steps is None else sorted({int(s) for s in steps})
        self.options = dict(
            num_probes=num_probes, num_iters=num_iters, num_points=num_points, sigma=sigma
        )

    def due(self, step):
        return step in self.steps if self.steps is not None else super().due(step)

    def next_due(self, step):
        if self.steps is None:
            return super().next_due(step)
        return next((s for s in self.steps if s > step), sys.maxsize)

    def __call__(self, ctx, step, params, opt_state, probe_state):
        if self._fn is None:
            self._fn = jax.jit(
                lambda p, d, key: curvature.spectral_density(
                    ctx.loss_fn, p, d, key=key, **self.options, **self.operator_args()
                )
            )
        d = jax.device_get(self._fn(params, self.data(ctx), self.key(ctx, step)))
        metrics = {
            "spectral_density_grid": d.grid.tolist(),
            "spectral_density": d.density.tolist(),
            "spectral_density_nodes": d.nodes.tolist(),
            "spectral_density_weights": d.weights.tolist(),
        }
        options = {**self.options, **self.operator_args()}
        metrics.update(run_blocks(self, ctx, step, params, "spectral_density", options))
        return metrics, probe_state


class HessianTrace(_CurvatureProbe):
    def __init__(
        self,
        every,
        num_probes=30,
        method="hutch++",
        num_examples=None,
        microbatch_size=None,
        precision="highest",
        blocks=None,
    ):
        super().__init__(every, num_examples, microbatch_size, precision)
        check_blocks(blocks)
        self.blocks = blocks
        if method not in ESTIMATORS:
            raise ConfigError(
                f"unknown trace method {method!r}; valid choices: " + ", ".join(ESTIMATORS)
            )
        if method == "hutch++" and (num_probes % 3 or num_probes < 6):
            raise ConfigError(
                f"hutch++ needs num_probes a multiple of 3 and >= 6, got {num_probes}"
            )
        self.num_probes, self.method = num_probes, method

    def __call__(self, ctx, step, params, opt_state, probe_state):
        if self._fn is None:
            self._fn = jax.jit(
                lambda p, d, key: curvature.hessian_trace(
                    ctx.loss_fn,
                    p,
                    d,
                    key=key,
                    num_probes=self.num_probes,
                    method=self.method,
                    **self.operator_args(),
                )
            )
        est = self._fn(params, self.data(ctx), self.key(ctx, step))
        metrics = {"hessian_trace": float(est.estimate), "hessian_trace_stderr": float(est.stderr)}
        options = dict(num_probes=self.num_probes, method=self.method, **self.operator_args())
        metrics.update(run_blocks(self, ctx, step, params, "hessian_trace", options))
        return metrics, probe_state


class GradientOverlap(_EigenProbe):
    def __init__(
        self,
        every,
        k=10,
        num_iters=40,
        num_examples=None,
        microbatch_size=None,
        precision="highest",
    ):
        super().__init__(every, k, num_iters, num_examples, microbatch_size, precision)

    def compute(self, ctx, params, opt_state, data, init, key):
        pairs = self.top_eigenpairs(ctx, params, data, init, key)
        loss, grads = curvature.dataset_loss_and_grad(
            ctx.loss_fn, params, data, self.microbatch_size
        )
        updates, _ = ctx.tx.update(
            grads, opt_state, params, grad_fn=lambda p: jax.grad(ctx.loss_fn)(p, data), loss=loss
        )
        metrics = {
            "gradient_overlap": curvature.subspace_fraction(pairs.eigenvectors, grads),
            "update_overlap": curvature.subspace_fraction(pairs.eigenvectors, updates),
        }
        if init is not None:
            metrics["eigenspace_overlap"] = curvature.subspace_overlap(init, pairs.eigenvectors)
        return metrics, pairs


class StepStabilityProbe(_CurvatureProbe):
    def __init__(self, every, k=1, num_iters=20, num_examples=None, precision="highest"):
        super().__init__(every, num_examples=num_examples, precision=precision)
        _check_k(k, num_iters)
        self.k, self.num_iters = k, num_iters

    def __call__(self, ctx, step, params, opt_state, probe_state):
        if self._fn is None:
            self._fn = jax.jit(
                lambda p, s, d, key: curvature.step_stability(
                    curvature.optax_step(ctx.loss_fn, ctx.tx),
                    p,
                    s,
                    d,
                    k=self.k,
                    num_iters=self.num_iters,
                    key=key,
                    precision=self.precision,
                )
            )
        result = self._fn(params, opt_state, self.data(ctx), self.key(ctx, step))
        return {
            "step_stability": float(result.spectral_radius),
            "step_stability_threshold": 1.0,
            "step_stability_flip": float(result.flip_radius),
            "step_stability_flip_threshold": 1.0,
        }, probe_state


PROBES.register("sharpness", Sharpness)
PROBES.register("preconditioned_sharpness", PreconditionedSharpness)
PROBES.register("spectral_density", SpectralDensity)
PROBES.register("hessian_trace", HessianTrace)
PROBES.register("gradient_overlap", GradientOverlap)
PROBES.register("step_stability", StepStabilityProbe)
