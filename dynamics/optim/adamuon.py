r"""AdaMuon: element-wise second moment of the orthogonalized direction (Si et al. 2025).

``scale_by_adamuon`` acts on matrix leaves; the alias ``adamuon`` adds decoupled weight decay and
the learning rate on matrices and AdamW on the rest (:mod:`dynamics.optim.partition`). The
momentum direction is Muon's (:mod:`dynamics.optim.common`); the final RMS rescaling makes the
rule independent of the weight layout.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import chex
import jax.numpy as jnp
import optax

from dynamics.optim.common import (
    accumulation_dtype,
    frobenius,
    scale_by_matrix_momentum,
)
from dynamics.optim.orthogonalizers import resolve_orthogonalizer
from dynamics.optim.partition import matrix_optimizer


class AdaMuonState(NamedTuple):
    """State of :func:`scale_by_adamuon`.

    Attributes:
      count: number of updates so far (int32 scalar).
      mu: the momentum ``m`` per leaf.
      nu: the element-wise second moment ``v`` of the orthogonalized direction, per leaf.
    """

    count: chex.Array
    mu: optax.Updates
    nu: optax.Updates


def scale_by_adamuon(
    *,
    beta: float = 0.95,
    b2: float = 0.999,
    eps: float = 1e-8,
    nesterov: bool = True,
    sign_stabilize: bool = False,
    rms: float = 0.2,
    ns_coeffs: Any = "muon",
    ns_steps: int = 5,
    orthogonalizer: Any = None,
    compute_dtype: Any = None,
    batch_ndim: int = 0,
    mu_dtype: Any = None,
) -> optax.GradientTransformation:
    r"""AdaMuon (Si et al. 2025, "AdaMuon: Adaptive Muon Optimizer", arXiv:2507.11005).

    .. math::
        O_t = \mathrm{orth}(u_t)\ (\text{or } \mathrm{orth}(\mathrm{sign}(u_t))),\quad
        v_t = b_2 v_{t-1} + (1 - b_2) O_t^2,\quad
        \hat O_t = O_t / (\sqrt{v_t / (1 - b_2^t)} + \epsilon),\quad
        \Delta_t = \hat O_t \cdot \mathrm{rms} \sqrt{m n} / \|\hat O_t\|_F

    with the Muon momentum direction ``u_t``. The final rescaling gives every matrix the update
    RMS ``rms`` (0.2, AdamW-matched), so no shape factor is applied; it is layout-free.
    ``sign_stabilize=True`` orthogonalizes ``sign(u_t)`` (the paper's sign-stabilized variant).

    Example:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_adamuon()
      >>> p = {"w": jnp.arange(32.0).reshape(4, 8)}
      >>> u, _ = tx.update(p, tx.init(p))
      >>> round(float(jnp.sqrt(jnp.mean(u["w"] ** 2))), 3)
      0.2
    """
    orth = resolve_orthogonalizer(
        orthogonalizer, coeffs=ns_coeffs, steps=ns_steps, dtype=compute_dtype
    )

    def init_nu(p):
        return jnp.zeros_like(p, dtype=accumulation_dtype(p.dtype))

    def step(u, g, count, v):
        if sign_stabilize:
            u = jnp.sign(u)
        o = orth(u).astype(v.dtype)
        bc2 = 1 - b2 ** count.astype(v.dtype)
        v = b2 * v + (1 - b2) * jnp.square(o).reshape(v.shape)
        o = o / (jnp.sqrt(v.reshape(o.shape) / bc2) + eps)
        size = o.shape[-2] * o.shape[-1]
        return o * (rms * math.sqrt(size)) / (frobenius(o) + 1e-12), v

    return scale_by_matrix_momentum(
        step,
        state=AdaMuonState,
        beta=beta,
        nesterov=nesterov,
        mu_dtype=mu_dtype,
        batch_ndim=batch_ndim,
        init_stats=init_nu,
    )


def adamuon(
    learning_rate: optax.ScalarOrSchedule,
    *,
    beta: float = 0.95,
    b2: float = 0.999,
    eps: float = 1e-8,
    nesterov: bool = True,
    sign_stabilize: bool = False,
    rms: float = 0.2,
    ns_coeffs: Any = "muon",
    ns_steps: int = 5,
    orthogonalizer: Any = None,
    compute_dtype: Any = None,
    batch_ndim: int = 0,
    mu_dtype: Any = None,
    weight_decay: float = 0.0,
    labels: Any = None,
    fallback: optax.GradientTransformation | None = None,
) -> optax.GradientTransformationExtraArgs:
    """AdaMuon on matrices, AdamW on the rest; see :func:`scale_by_adamuon`.

    ``labels`` and ``fallback`` (the other leaves): as in :func:`dynamics.optim.muon.muon`.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = adamuon(0.02)
      >>> p = {"w": jnp.ones((4, 8)), "b": jnp.zeros(8)}
      >>> _ = tx.update(p, tx.init(p), p)
    """
    return matrix_optimizer(
        scale_by_adamuon(
            beta=beta,
            b2=b2,
            eps=eps,
            nesterov=nesterov,
            sign_stabilize=sign_stabilize,
            rms=rms,
            ns_coeffs=ns_coeffs,
            ns_steps=ns_steps,
            orthogonalizer=orthogonalizer,
            compute_dtype=compute_dtype,
            batch_ndim=batch_ndim,
            mu_dtype=mu_dtype,
        ),
        learning_rate,
        weight_decay=weight_decay,
        labels=labels,
        batch_ndim=batch_ndim,
        fallback=fallback,
    )
