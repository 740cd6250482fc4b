"""Curvature probes: sharpness, preconditioned sharpness, spectral density, trace, subspace overlap
and the stability of the optimizer step, computed with :mod:`dynamics.curvature`.

(About 400 lines: the six full-batch probes share one base and its options, and each is short;
the minibatch probes live in :mod:`dynamics.train.probes.minibatch`.)

Every probe builds its jitted functions in ``setup(ctx)`` and works on the first
``num_examples`` training examples (None: all of them), accumulating Hessian-vector products over
microbatches of ``microbatch_size`` (None: one batch), at matmul ``precision`` (``"highest"``:
true fp32 on GPUs). Randomness is a pure function of ``(config.seed, probe name, step)``, and
warm-start eigenvectors are probe state saved in checkpoints, so a resumed run logs the same
numbers.

* ``sharpness(every, k=2, num_iters=30, ...)``: top-k Hessian eigenvalues ``sharpness``,
  ``sharpness_2``, ..., their residuals ``sharpness_residual``, ``sharpness_2_residual``, ..., and
  ``sharpness_threshold`` when the optimizer's row in :data:`dynamics.optim.registry.TABLE` has a
  linear-stability threshold (GD 2/lr, heavy ball (2 + 2b)/lr, Nesterov (2 + 2b)/(lr (1 + 2b)),
  unnormalized SAM on plain GD (sqrt(1 + 8 rho/lr) - 1)/(2 rho)). Warm-started from the previous
  eigenvectors.
* ``preconditioned_sharpness(every, k=1, ...)``: top eigenvalues of P^-1/2 H P^-1/2 with P read
  from the optimizer state by the optimizer's preconditioner reader in the same table
  (Adam/AdamW: bias-corrected sqrt(nu) + eps; RMSProp: optax's sqrt(nu + eps)), and
  ``preconditioned_sharpness_threshold`` = (2 + 2 b1)/((1 - b1) lr) for the Adam family, 2/lr
  for RMSProp.
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

import sys

import jax
import jax.numpy as jnp

from dynamics import curvature
from dynamics.curvature import tree
from dynamics.curvature.operators import take
from dynamics.curvature.trace import ESTIMATORS
from dynamics.optim import registry
from dynamics.registry import ConfigError
from dynamics.train.probes.base import PROBES, Probe, ProbeContext
from dynamics.train.probes.blocks import block_fn, check_blocks, run_blocks

MATMUL_PRECISIONS = ("highest", "high", "default", "float32", "tensorfloat32", "bfloat16")


def _preconditioner(config) -> registry.Preconditioner:
    """The preconditioner reader of the configured optimizer, or ConfigError naming the rules
    that have one."""
    reader = registry.preconditioner(config.optimizer)
    if reader is None:
        raise ConfigError(
            f"probes.preconditioned_sharpness needs optimizer.name in "
            f"{', '.join(registry.with_preconditioner())}; got {config.optimizer.name!r}"
        )
    return reader


def _check_k(k: int, num_iters: int) -> None:
    if not 1 <= k <= num_iters:
        raise ConfigError(f"probe needs 1 <= k <= num_iters, got k={k}, num_iters={num_iters}")


class CurvatureProbe(Probe):
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

    def data(self, ctx: ProbeContext):
        if self.num_examples is None:
            return ctx.train
        return take(ctx.train, self.num_examples)

    def operator_args(self):
        return {"microbatch_size": self.microbatch_size, "precision": self.precision}

    def sharpness_threshold(self, ctx: ProbeContext, step: int) -> float | None:
        """The optimizer's linear-stability threshold at ``step`` (None where none is known)."""
        lr = float(ctx.learning_rate(step))
        return registry.sharpness_threshold(ctx.config.optimizer, lr)


class _EigenProbe(CurvatureProbe):
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
        self._fns = None

    def setup(self, ctx):
        # Compiled at their first call: the cold start once, the warm start from then on.
        self._fns = {
            False: jax.jit(lambda p, s, d, key: self.compute(ctx, p, s, d, None, key)),
            True: jax.jit(lambda p, s, d, init, key: self.compute(ctx, p, s, d, init, key)),
        }

    def init(self, ctx, params):
        return {"eigenvectors": tree.basis_zeros(params, self.k), "valid": jnp.zeros((), bool)}

    def __call__(self, ctx, step, params, opt_state, probe_state):
        warm = bool(probe_state["valid"])
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
    name = "sharpness"

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

    def setup(self, ctx):
        super().setup(ctx)
        options = dict(k=1, num_iters=self.num_iters, **self.operator_args())
        self._block_fn = block_fn(self.blocks, ctx, "sharpness", options)

    def compute(self, ctx, params, opt_state, data, init, key):
        pairs = self.top_eigenpairs(ctx, params, data, init, key)
        return _eigen_metrics("sharpness", pairs), pairs

    def __call__(self, ctx, step, params, opt_state, probe_state):
        metrics, state = super().__call__(ctx, step, params, opt_state, probe_state)
        threshold = self.sharpness_threshold(ctx, step)
        if threshold is not None:
            metrics["sharpness_threshold"] = threshold
        metrics.update(run_blocks(self._block_fn, params, self.data(ctx), self.key(ctx, step)))
        return metrics, state


class PreconditionedSharpness(_EigenProbe):
    name = "preconditioned_sharpness"

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

    def check(self, config):
        _preconditioner(config)

    def setup(self, ctx):
        self.preconditioner = _preconditioner(ctx.config)
        super().setup(ctx)

    def compute(self, ctx, params, opt_state, data, init, key):
        pairs = curvature.preconditioned_sharpness(
            ctx.loss_fn,
            params,
            self.preconditioner.read(opt_state),
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
        lr = float(ctx.learning_rate(step))
        metrics["preconditioned_sharpness_threshold"] = self.preconditioner.threshold(lr)
        return metrics, state


class SpectralDensity(CurvatureProbe):
    name = "spectral_density"

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

    def setup(self, ctx):
        self._fn = jax.jit(
            lambda p, d, key: curvature.spectral_density(
                ctx.loss_fn, p, d, key=key, **self.options, **self.operator_args()
            )
        )
        options = {**self.options, **self.operator_args()}
        self._block_fn = block_fn(self.blocks, ctx, "spectral_density", options)

    def __call__(self, ctx, step, params, opt_state, probe_state):
        d = jax.device_get(self._fn(params, self.data(ctx), self.key(ctx, step)))
        metrics = {
            "spectral_density_grid": d.grid.tolist(),
            "spectral_density": d.density.tolist(),
            "spectral_density_nodes": d.nodes.tolist(),
            "spectral_density_weights": d.weights.tolist(),
        }
        metrics.update(run_blocks(self._block_fn, params, self.data(ctx), self.key(ctx, step)))
        return metrics, probe_state


class HessianTrace(CurvatureProbe):
    name = "hessian_trace"

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

    def setup(self, ctx):
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
        options = dict(num_probes=self.num_probes, method=self.method, **self.operator_args())
        self._block_fn = block_fn(self.blocks, ctx, "hessian_trace", options)

    def __call__(self, ctx, step, params, opt_state, probe_state):
        est = self._fn(params, self.data(ctx), self.key(ctx, step))
        metrics = {"hessian_trace": float(est.estimate), "hessian_trace_stderr": float(est.stderr)}
        metrics.update(run_blocks(self._block_fn, params, self.data(ctx), self.key(ctx, step)))
        return metrics, probe_state


class GradientOverlap(_EigenProbe):
    name = "gradient_overlap"

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


class StepStabilityProbe(CurvatureProbe):
    name = "step_stability"

    def __init__(self, every, k=1, num_iters=20, num_examples=None, precision="highest"):
        super().__init__(every, num_examples=num_examples, precision=precision)
        _check_k(k, num_iters)
        self.k, self.num_iters = k, num_iters

    def setup(self, ctx):
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

    def __call__(self, ctx, step, params, opt_state, probe_state):
        result = self._fn(params, opt_state, self.data(ctx), self.key(ctx, step))
        return {
            "step_stability": float(result.spectral_radius),
            "step_stability_threshold": 1.0,
            "step_stability_flip": float(result.flip_radius),
            "step_stability_flip_threshold": 1.0,
        }, probe_state


for _probe in (
    Sharpness,
    PreconditionedSharpness,
    SpectralDensity,
    HessianTrace,
    GradientOverlap,
    StepStabilityProbe,
):
    PROBES.register(_probe.name, _probe)
