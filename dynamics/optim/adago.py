r"""AdaGO: AdaGrad-normed step sizes on Muon's orthogonal direction (Zhang et al. 2025).

``scale_by_adago`` acts on matrix leaves; the alias ``adago`` adds decoupled weight decay and the
learning rate on matrices and AdamW on the rest (:mod:`dynamics.optim.partition`). Momentum and
shape factors as in :mod:`dynamics.optim.common` (Flax ``(in, out)`` layout by default).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from dynamics.optim.common import (
    accumulation_dtype,
    check_scaling,
    frobenius,
    scale_by_matrix_momentum,
    shape_factor,
)
from dynamics.optim.orthogonalizers import resolve_orthogonalizer
from dynamics.optim.partition import matrix_optimizer, matrix_shape


class AdaGOState(NamedTuple):
    """State of :func:`scale_by_adago`.

    Attributes:
      count: number of updates so far (int32 scalar).
      mu: the momentum ``M`` per leaf.
      v_sq: the accumulated clipped squared gradient norms ``v_t^2``, one scalar (at least
        float32) per matrix (shape ``(B,)`` for the matrix view ``(B, m, n)`` of each leaf).
    """

    count: chex.Array
    mu: optax.Updates
    v_sq: optax.Updates


def scale_by_adago(
    *,
    beta: float = 0.95,
    gamma: float = 1.0,
    v0: float = 1e-6,
    min_step: float = 1e-3,
    nesterov: bool = False,
    ns_coeffs: Any = "muon",
    ns_steps: int = 5,
    orthogonalizer: Any = None,
    compute_dtype: Any = None,
    scaling: str = "none",
    rms: float = 0.2,
    layout: str = "in_out",
    batch_ndim: int = 0,
    mu_dtype: Any = None,
) -> optax.GradientTransformation:
    r"""AdaGO (Zhang, Liu, Schaeffer 2025, "AdaGrad Meets Muon: Adaptive Stepsizes for Orthogonal
    Updates", arXiv:2509.02981, Algorithm 2).

    .. math::
        M_t = \mu M_{t-1} + (1 - \mu) G_t,\quad
        v_t^2 = v_{t-1}^2 + \min(\|G_t\|_F^2, \gamma^2),\quad
        \Delta_t = \max\!\Big(\epsilon,\ \frac{\min(\|G_t\|_F, \gamma)}{v_t}\Big)\,
        \mathrm{orth}(M_t)

    and the alias steps ``-eta Delta_t``: the paper's step size
    ``alpha_t = max(eps, eta min(||G||, gamma) / v_t)`` with the floor expressed relative to the
    learning rate (``min_step = eps / eta``) so that a schedule scales the whole step. The
    orthogonal direction is kept intact (no element-wise adaptivity); one scalar per matrix.
    ``v0 > 0`` is the paper's initial accumulator, ``gamma`` its clipping threshold of the
    gradient norm and ``eps`` its lower bound of the step.

    Defaults: the algorithm statement takes ``gamma``, ``v0`` and ``eps`` as inputs without
    fixing them, so ``gamma = 1``, ``v0 = 1e-6`` and ``min_step = 1e-3`` are this library's
    choices, not the paper's: gradient norms above 1 count as 1, the first step is
    almost the full learning rate (``min(||G_1||, gamma) / v_1 ~ 1``), and the step never falls
    below ``1e-3 eta``. Other ports chose differently (optax's contrib AdaGO, which optax
    0.2.8 does not ship: ``gamma = 1``, ``v0 = 1``, ``eps = 1e-6`` absolute; pytorch-optimizer's
    ``AdaGO``: ``gamma = 10``, ``eps = 5e-4``, ``v = 1e-6``); set them for the problem at hand.

    Args:
      beta: momentum decay ``mu``.
      gamma: clipping threshold of the gradient's Frobenius norm.
      v0: initial accumulator ``v_0`` (the state starts at ``v0^2``).
      min_step: lower bound of the step relative to the learning rate (``eps / eta``).
      nesterov: Nesterov direction; False (the paper's heavy-ball ``orth(M_t)``) by default.
      ns_coeffs, ns_steps, orthogonalizer, compute_dtype: the orthogonalizer, as in
        :func:`scale_by_muon`.
      scaling: shape factor mode (module doc); ``"none"`` as in the paper.
      rms: target RMS of the ``"consistent_rms"`` / ``"spectral"`` mode.
      layout: ``"in_out"`` (Flax) or ``"out_in"`` (PyTorch), for the shape factor.
      batch_ndim: leading axes of every leaf that index independent matrices.
      mu_dtype: momentum dtype (default: the leaf's).

    Example:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_adago()
      >>> p = {"w": jnp.ones((4, 8))}
      >>> u, s = tx.update(p, tx.init(p))
      >>> s.v_sq["w"].shape
      (1,)
    """
    check_scaling(scaling, layout)
    orth = resolve_orthogonalizer(
        orthogonalizer, coeffs=ns_coeffs, steps=ns_steps, dtype=compute_dtype
    )

    # Applied to the (B, fan_in, fan_out) matrix view: one batch axis.
    factor = functools.partial(shape_factor, scaling=scaling, rms=rms, batch_ndim=1, layout=layout)

    def init_v_sq(p):
        batch = matrix_shape(p.shape, batch_ndim)[0]
        return jnp.full((batch,), v0**2, accumulation_dtype(p.dtype))

    def step(u, g, count, v_sq):
        del count
        clipped = jnp.minimum(frobenius(g)[:, 0, 0], gamma)
        v_sq = v_sq + jnp.square(clipped)
        size = jnp.maximum(min_step, clipped * jax.lax.rsqrt(v_sq))
        o = orth(u).astype(v_sq.dtype) * size[:, None, None]
        return factor(g.shape) * o, v_sq

    return scale_by_matrix_momentum(
        step,
        state=AdaGOState,
        beta=beta,
        nesterov=nesterov,
        mu_dtype=mu_dtype,
        batch_ndim=batch_ndim,
        init_stats=init_v_sq,
    )


def adago(
    learning_rate: optax.ScalarOrSchedule,
    *,
    beta: float = 0.95,
    gamma: float = 1.0,
    v0: float = 1e-6,
    min_step: float = 1e-3,
    nesterov: bool = False,
    ns_coeffs: Any = "muon",
    ns_steps: int = 5,
    orthogonalizer: Any = None,
    compute_dtype: Any = None,
    scaling: str = "none",
    rms: float = 0.2,
    layout: str = "in_out",
    batch_ndim: int = 0,
    mu_dtype: Any = None,
    weight_decay: float = 0.0,
    labels: Any = None,
    fallback: optax.GradientTransformation | None = None,
) -> optax.GradientTransformationExtraArgs:
    """AdaGO on matrices, AdamW on the rest; see :func:`scale_by_adago`.

    ``labels`` and ``fallback`` (the other leaves): as in :func:`dynamics.optim.muon.muon`.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = adago(0.05)
      >>> p = {"w": jnp.ones((4, 8)), "b": jnp.zeros(8)}
      >>> _ = tx.update(p, tx.init(p), p)
    """
    return matrix_optimizer(
        scale_by_adago(
            beta=beta,
            gamma=gamma,
            v0=v0,
            min_step=min_step,
            nesterov=nesterov,
            ns_coeffs=ns_coeffs,
            ns_steps=ns_steps,
            orthogonalizer=orthogonalizer,
            compute_dtype=compute_dtype,
            scaling=scaling,
            rms=rms,
            layout=layout,
            batch_ndim=batch_ndim,
            mu_dtype=mu_dtype,
        ),
        learning_rate,
        weight_decay=weight_decay,
        labels=labels,
        batch_ndim=batch_ndim,
        fallback=fallback,
    )
