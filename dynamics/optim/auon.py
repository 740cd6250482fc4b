r"""AuON and hybrid AuON: cosh-RMS normalized momentum (Maity 2025, arXiv:2509.24320).

``scale_by_auon`` acts on matrix leaves (its state is :class:`dynamics.optim.muon.MuonState`);
the aliases ``auon`` and ``auon_hybrid`` add decoupled weight decay and the learning rate on
matrices and AdamW on the rest (:mod:`dynamics.optim.partition`). Momentum and shape factors as
in :mod:`dynamics.optim.common` (Flax ``(in, out)`` layout by default).
"""

from __future__ import annotations

import functools
from typing import Any

import jax.numpy as jnp
import optax

from dynamics.optim.common import (
    accumulation_dtype,
    check_scaling,
    frobenius,
    scale_by_matrix_momentum,
    shape_factor,
)
from dynamics.optim.muon import MuonState
from dynamics.optim.orthogonalizers import resolve_orthogonalizer
from dynamics.optim.partition import matrix_optimizer


def scale_by_auon(
    *,
    beta: float = 0.95,
    gamma: float = 1.5,
    nesterov: bool = True,
    ns_steps: int = 0,
    ns_coeffs: Any = "muon",
    orthogonalizer: Any = None,
    compute_dtype: Any = None,
    scaling: str = "shape",
    rms: float = 0.2,
    layout: str = "in_out",
    batch_ndim: int = 0,
    mu_dtype: Any = None,
) -> optax.GradientTransformation:
    r"""AuON (Maity 2025, "AuON: A Linear-time Alternative to Semi-Orthogonal Momentum Updates",
    arXiv:2509.24320) and, with ``ns_steps > 0``, its hybrid variant.

    .. math::
        X_t = u_t / (\|u_t\|_F + 10^{-7}),\quad
        r_t = \sqrt{\mathrm{mean}(\cosh(\gamma X_t)^2)},\quad
        \Delta_t = c\, X_t / (r_t + 10^{-8})

    with the Muon momentum direction ``u_t`` and shape factor ``c``. Hybrid (``ns_steps > 0``):
    ``X_t`` is ``orth(u_t)`` renormalized to unit Frobenius norm, where ``orth`` is the
    ``orthogonalizer`` (default ``ns_steps`` Newton-Schulz steps with ``ns_coeffs``).

    Implemented as the paper states it. Note what it implies: for an ``N``-entry matrix with
    ``||X||_F = 1``, ``1 <= r <= sqrt(1 + sinh(gamma)^2 / N)``, so ``r`` is within a hair of 1
    for any real layer and the step is essentially Frobenius-normalized momentum (update RMS
    ``~ 1 / sqrt(N)``, far below Muon's); tune the learning rate accordingly.

    Args:
      beta: momentum decay.
      gamma: the cosh scale ``gamma``.
      nesterov: Nesterov direction (default) or heavy ball ``u = m``.
      ns_steps: 0 for plain AuON (linear time, no orthogonalizer); ``> 0`` for the hybrid, with
        this many orthogonalizer steps.
      ns_coeffs: coefficient preset / table of the default Newton-Schulz orthogonalizer.
      orthogonalizer: the hybrid's orthogonalizer: None or ``"newton_schulz"``,
        ``"polar_express"``, ``"svd"`` or a callable ``x[..., m, n] -> x``; only used (and only
        accepted) with ``ns_steps > 0``.
      compute_dtype: orthogonalizer dtype (None: ``default_compute_dtype`` of the input).
      scaling: shape factor mode (module doc).
      rms: target RMS of the ``"consistent_rms"`` / ``"spectral"`` mode.
      layout: ``"in_out"`` (Flax) or ``"out_in"`` (PyTorch), for the shape factor.
      batch_ndim: leading axes of every leaf that index independent matrices.
      mu_dtype: momentum dtype (default: the leaf's).

    Example:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_auon(scaling="none")
      >>> p = {"w": jnp.ones((4, 8))}
      >>> u, _ = tx.update(p, tx.init(p))
      >>> float(jnp.linalg.norm(u["w"])) < 1.0
      True
    """
    check_scaling(scaling, layout)
    if ns_steps < 0:
        raise ValueError(f"ns_steps must be >= 0, got {ns_steps}")
    if orthogonalizer is not None and ns_steps == 0:
        # Plain AuON has no orthogonalizer; silently ignoring one would hide a misconfiguration.
        raise ValueError("orthogonalizer= is the hybrid's: set ns_steps > 0 (or use auon_hybrid)")
    orth = (
        resolve_orthogonalizer(
            orthogonalizer, coeffs=ns_coeffs, steps=ns_steps, dtype=compute_dtype
        )
        if ns_steps
        else None
    )

    # Applied to the (B, fan_in, fan_out) matrix view: one batch axis.
    factor = functools.partial(shape_factor, scaling=scaling, rms=rms, batch_ndim=1, layout=layout)

    def step(u, g, count):
        del count
        x = u.astype(accumulation_dtype(u.dtype))
        if orth is not None:
            x = orth(x)
        x = x / (frobenius(x) + 1e-7)
        r = jnp.sqrt(jnp.mean(jnp.square(jnp.cosh(gamma * x)), axis=(-2, -1), keepdims=True))
        return (factor(g.shape) * x / (r + 1e-8),)

    return scale_by_matrix_momentum(
        step,
        state=MuonState,
        beta=beta,
        nesterov=nesterov,
        mu_dtype=mu_dtype,
        batch_ndim=batch_ndim,
    )


def auon(
    learning_rate: optax.ScalarOrSchedule,
    *,
    beta: float = 0.95,
    gamma: float = 1.5,
    nesterov: bool = True,
    ns_steps: int = 0,
    ns_coeffs: Any = "muon",
    orthogonalizer: Any = None,
    compute_dtype: Any = None,
    scaling: str = "shape",
    rms: float = 0.2,
    layout: str = "in_out",
    batch_ndim: int = 0,
    mu_dtype: Any = None,
    weight_decay: float = 0.0,
    labels: Any = None,
    fallback: optax.GradientTransformation | None = None,
) -> optax.GradientTransformationExtraArgs:
    """AuON (``ns_steps=0``) or hybrid AuON on matrices, AdamW on the rest; see
    :func:`scale_by_auon`.

    ``labels`` and ``fallback`` (the other leaves): as in :func:`dynamics.optim.muon.muon`.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = auon(0.1)
      >>> p = {"w": jnp.ones((4, 8)), "b": jnp.zeros(8)}
      >>> _ = tx.update(p, tx.init(p), p)
    """
    return matrix_optimizer(
        scale_by_auon(
            beta=beta,
            gamma=gamma,
            nesterov=nesterov,
            ns_steps=ns_steps,
            ns_coeffs=ns_coeffs,
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


def auon_hybrid(
    learning_rate: optax.ScalarOrSchedule,
    *,
    beta: float = 0.95,
    gamma: float = 1.5,
    nesterov: bool = True,
    ns_steps: int = 1,
    ns_coeffs: Any = "muon",
    orthogonalizer: Any = None,
    compute_dtype: Any = None,
    scaling: str = "shape",
    rms: float = 0.2,
    layout: str = "in_out",
    batch_ndim: int = 0,
    mu_dtype: Any = None,
    weight_decay: float = 0.0,
    labels: Any = None,
    fallback: optax.GradientTransformation | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Hybrid AuON: :func:`auon` with ``ns_steps=1`` by default.

    .. math::
        X_t = \mathrm{orth}(u_t) / \|\mathrm{orth}(u_t)\|_F,\quad
        \Delta_t = c\, X_t / \sqrt{\mathrm{mean}(\cosh(\gamma X_t)^2)}

    The paper's hybrid variant: Newton-Schulz steps (one by default) before AuON's cosh-RMS
    normalization; ``orthogonalizer=`` swaps in any other orthogonalizer. Registered under its
    own name so that a config can select it. See :func:`scale_by_auon` for every argument.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = auon_hybrid(0.1, orthogonalizer="polar_express", ns_steps=2)
      >>> p = {"w": jnp.ones((4, 8)), "b": jnp.zeros(8)}
      >>> _ = tx.update(p, tx.init(p), p)
    """
    return auon(
        learning_rate,
        beta=beta,
        gamma=gamma,
        nesterov=nesterov,
        ns_steps=ns_steps,
        ns_coeffs=ns_coeffs,
        orthogonalizer=orthogonalizer,
        compute_dtype=compute_dtype,
        scaling=scaling,
        rms=rms,
        layout=layout,
        batch_ndim=batch_ndim,
        mu_dtype=mu_dtype,
        weight_decay=weight_decay,
        labels=labels,
        fallback=fallback,
    )
