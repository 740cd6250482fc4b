r"""Muon: momentum, then the orthogonalized matrix step (Jordan et al. 2024).

``scale_by_muon`` acts on matrix leaves; the alias ``muon(learning_rate, ...)`` chains
``scale_by_muon -> add_decayed_weights -> scale_by_learning_rate`` on matrices and sends every
other leaf to AdamW (:mod:`dynamics.optim.partition` documents the labelling and the matrix view
of conv kernels and stacked layers). Shape factors assume the Flax ``(in, out)`` layout
(``layout="in_out"``); pass ``layout="out_in"`` for PyTorch ``(out, in)`` weights. The momentum
and the ``scaling=`` modes are documented in :mod:`dynamics.optim.common`.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import chex
import optax

from dynamics.optim.common import (
    check_scaling,
    scale_by_matrix_momentum,
    shape_factor,
)
from dynamics.optim.orthogonalizers import resolve_orthogonalizer
from dynamics.optim.partition import matrix_optimizer


class MuonState(NamedTuple):
    """State of the momentum-only rules: :func:`scale_by_muon`, :func:`scale_by_auon` and
    :func:`dynamics.optim.scion.scale_by_scion`.

    Attributes:
      count: number of updates so far (int32 scalar).
      mu: the momentum ``m``, one array per leaf, dtype ``mu_dtype`` or the leaf's.
    """

    count: chex.Array
    mu: optax.Updates


def scale_by_muon(
    *,
    beta: float = 0.95,
    nesterov: bool = True,
    bias_correction: bool = False,
    ns_coeffs: Any = "muon",
    ns_steps: int = 5,
    eps: float | None = None,
    orthogonalizer: Any = None,
    compute_dtype: Any = None,
    scaling: str = "shape",
    rms: float = 0.2,
    layout: str = "in_out",
    batch_ndim: int = 0,
    mu_dtype: Any = None,
) -> optax.GradientTransformation:
    r"""Muon (Jordan et al. 2024, "Muon: An optimizer for hidden layers in neural networks").

    .. math::
        m_t = b m_{t-1} + (1 - b) g_t,\quad u_t = (1 - b) g_t + b m_t \ (\text{or } m_t),\quad
        \Delta_t = s(\text{shape})\, \mathrm{orth}(u_t)

    ``orth`` is ``orthogonalizer`` (default quintic Newton-Schulz with ``ns_coeffs`` for
    ``ns_steps`` steps, see :mod:`dynamics.optim.orthogonalizers`), applied to the matrix view of
    every leaf. Every leaf must be a matrix (``ndim >= 2 + batch_ndim``): use :func:`muon` for
    trees with biases.

    Args:
      beta: momentum decay ``b``.
      nesterov: Nesterov direction (default) or heavy ball ``u = m``.
      bias_correction: optax.contrib.muon's bias-corrected Nesterov direction.
      ns_coeffs: coefficient preset / table of the default Newton-Schulz orthogonalizer.
      ns_steps: number of orthogonalizer steps.
      eps: added to the Frobenius norm before Newton-Schulz (preset default 1e-7).
      orthogonalizer: None, ``"newton_schulz"``, ``"polar_express"``, ``"svd"`` or a callable
        ``x[..., m, n] -> x``.
      compute_dtype: orthogonalizer dtype (None: ``default_compute_dtype`` of the input).
      scaling: ``"shape"``, ``"consistent_rms"`` (alias ``"spectral"``), ``"unit_rms"`` or
        ``"none"`` (module doc).
      rms: target RMS of the ``"consistent_rms"`` / ``"spectral"`` mode.
      layout: ``"in_out"`` (Flax) or ``"out_in"`` (PyTorch), for the shape factor.
      batch_ndim: leading axes of every leaf that index independent matrices.
      mu_dtype: momentum dtype (default: the leaf's).

    Example:
      >>> import jax.numpy as jnp, optax
      >>> tx = scale_by_muon()
      >>> params = {"w": jnp.ones((4, 8))}
      >>> u, _ = tx.update(params, tx.init(params))
      >>> u["w"].shape
      (4, 8)
    """
    check_scaling(scaling, layout)
    orth = resolve_orthogonalizer(
        orthogonalizer, coeffs=ns_coeffs, steps=ns_steps, eps=eps, dtype=compute_dtype
    )

    # Applied to the (B, fan_in, fan_out) matrix view: one batch axis.
    factor = functools.partial(shape_factor, scaling=scaling, rms=rms, batch_ndim=1, layout=layout)

    def step(u, g, count):
        del count
        return (factor(g.shape) * orth(u),)

    return scale_by_matrix_momentum(
        step,
        state=MuonState,
        beta=beta,
        nesterov=nesterov,
        bias_correction=bias_correction,
        mu_dtype=mu_dtype,
        batch_ndim=batch_ndim,
    )


def muon(
    learning_rate: optax.ScalarOrSchedule,
    *,
    beta: float = 0.95,
    nesterov: bool = True,
    bias_correction: bool = False,
    ns_coeffs: Any = "muon",
    ns_steps: int = 5,
    eps: float | None = None,
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
    """Muon on matrices, AdamW on the rest; see :func:`scale_by_muon`.

    Decoupled weight decay on matrices: ``p <- p - lr (Delta + weight_decay p)``. Reference
    defaults: ``learning_rate=0.02``, ``beta=0.95``, 5 Newton-Schulz steps. ``labels`` chooses
    the matrix leaves (:func:`dynamics.optim.partition.default_labels` by default); every other
    leaf goes to ``fallback``, a transform (default ``optax.adamw(learning_rate)`` without
    decay). A config sets that AdamW with ``adam_learning_rate``, ``adam_b1``, ``adam_b2``,
    ``adam_eps`` and ``adam_weight_decay`` (:func:`dynamics.optim.registry.with_adamw_fallback`).

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> params = {"w": jnp.ones((4, 8)), "b": jnp.zeros(8)}
      >>> tx = muon(0.02)
      >>> u, _ = tx.update(params, tx.init(params), params)
      >>> sorted(u)
      ['b', 'w']
    """
    return matrix_optimizer(
        scale_by_muon(
            beta=beta,
            nesterov=nesterov,
            bias_correction=bias_correction,
            ns_coeffs=ns_coeffs,
            ns_steps=ns_steps,
            eps=eps,
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
