"""Matrix-free curvature of a loss on parameter pytrees, all jit-compatible.

Products (``hvp``, ``gnvp``), dataset-level operators accumulated over microbatches, Lanczos with
full reorthogonalization (``lanczos``, ``eigsh``, ``top_eigenpairs``), ``power_iteration``,
stochastic Lanczos quadrature (``spectral_density``), trace estimators (``hessian_trace``:
Hutchinson, Hutch++), preconditioned sharpness with preconditioners read from optax states,
stability thresholds, the stability of a whole optimizer step (``step_stability``), subspace
diagnostics, minibatch curvature (``batch_sharpness``, ``directional_sharpness``,
``trace_condition``) and the curvature of parameter blocks (``block_top_eigenpairs``,
``block_hessian_trace``, ``block_spectral_density``, ``layer_sharpness``).
``loss_fn(params, batch) -> scalar``; the data is always an argument.

Called eagerly, every entry point compiles once per ``loss_fn`` object (or ``matvec``,
``step_fn``) and static sizes, and reuses the program for new parameter and data values
(:mod:`dynamics.curvature.compile`): define ``loss_fn`` once, not as a new lambda per call. Inside
a caller's ``jax.jit`` the computation is simply inlined.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from dynamics import curvature
  >>> loss = lambda w, b: 0.5 * jnp.mean((b["x"] @ w - b["y"]) ** 2)
  >>> data = {"x": jnp.diag(jnp.array([3.0, 2.0, 1.0])), "y": jnp.zeros(3)}
  >>> pairs = curvature.top_eigenpairs(loss, jnp.zeros(3), data, k=1, num_iters=3,
  ...                                  key=jax.random.key(0))
  >>> jnp.round(pairs.eigenvalues, 4)
  Array([3.], dtype=float32)
"""

from dynamics.curvature import tree
from dynamics.curvature.blocks import (
    block_hessian_trace,
    block_leaves,
    block_spectral_density,
    block_top_eigenpairs,
    layer_blocks,
    layer_sharpness,
)
from dynamics.curvature.density import SpectralDensity, lanczos_quadrature, slq, spectral_density
from dynamics.curvature.hvp import gnvp, hvp
from dynamics.curvature.lanczos import (
    Eigenpairs,
    LanczosResult,
    eigsh,
    lanczos,
    seeded_rayleigh_ritz,
    top_eigenpairs,
    tridiagonal,
)
from dynamics.curvature.minibatch import (
    BatchSharpness,
    batch_sharpness,
    directional_curvature,
    directional_sharpness,
)
from dynamics.curvature.operators import (
    dataset_gauss_newton_operator,
    dataset_loss_and_grad,
    dataset_operator,
    microbatch_mean,
)
from dynamics.curvature.power import PowerResult, power_iteration
from dynamics.curvature.preconditioned import (
    adam_preconditioner,
    find_state,
    preconditioned_operator,
    preconditioned_sharpness,
    rmsprop_preconditioner,
)
from dynamics.curvature.sgd_stability import TraceCondition, trace_condition
from dynamics.curvature.stability import StepStability, arnoldi, optax_step, step_stability
from dynamics.curvature.subspace import subspace_fraction, subspace_overlap
from dynamics.curvature.third_order import *  # noqa: F403 -- its __all__: third derivatives
from dynamics.curvature.thresholds import (
    adam_threshold,
    gd_threshold,
    momentum_threshold,
    nesterov_threshold,
    sgd_frobenius_threshold,
    sgd_trace_threshold,
    unnormalized_sam_threshold,
)
from dynamics.curvature.trace import TraceEstimate, hessian_trace, hutch_plus_plus, hutchinson

__all__ = [
    "BatchSharpness",
    "Eigenpairs",
    "LanczosResult",
    "PowerResult",
    "SpectralDensity",
    "StepStability",
    "TraceCondition",
    "TraceEstimate",
    "adam_preconditioner",
    "adam_threshold",
    "arnoldi",
    "batch_sharpness",
    "block_hessian_trace",
    "block_leaves",
    "block_spectral_density",
    "block_top_eigenpairs",
    "dataset_gauss_newton_operator",
    "dataset_loss_and_grad",
    "dataset_operator",
    "directional_curvature",
    "directional_sharpness",
    "eigsh",
    "find_state",
    "gd_threshold",
    "gnvp",
    "hessian_trace",
    "hutch_plus_plus",
    "hutchinson",
    "hvp",
    "lanczos",
    "lanczos_quadrature",
    "layer_blocks",
    "layer_sharpness",
    "microbatch_mean",
    "momentum_threshold",
    "nesterov_threshold",
    "optax_step",
    "power_iteration",
    "preconditioned_operator",
    "preconditioned_sharpness",
    "rmsprop_preconditioner",
    "seeded_rayleigh_ritz",
    "sgd_frobenius_threshold",
    "sgd_trace_threshold",
    "slq",
    "spectral_density",
    "step_stability",
    "subspace_fraction",
    "subspace_overlap",
    "top_eigenpairs",
    "trace_condition",
    "tree",
    "tridiagonal",
    "unnormalized_sam_threshold",
]
