r"""NorMuon: Muon with a per-neuron second moment (Li et al. 2025, arXiv:2510.05491).

``scale_by_normuon`` acts on matrix leaves; the alias ``normuon`` adds decoupled weight decay and
the learning rate on matrices and AdamW on the rest (:mod:`dynamics.optim.partition`). Momentum
and shape factors as in :mod:`dynamics.optim.common`; ``layout`` says which axis holds the output
neurons (``"in_out"``: the last axis of a Flax kernel; ``"out_in"``: the rows of a PyTorch
weight).
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


class NorMuonState(NamedTuple):
    """State of :func:`scale_by_normuon`.

    Attributes:
      count: number of updates so far (int32 scalar).
      mu: the momentum ``m`` per leaf.
      nu: per-neuron second moment (at least float32), ``(B, 1, fan_out)`` (``in_out`` layout) or
        ``(B, fan_out, 1)`` (``out_in``) for the matrix view ``(B, rows, cols)`` of each leaf.
    """

    count: chex.Array
    mu: optax.Updates
    nu: optax.Updates


def _neuron_axis(layout):
    # The statistic is averaged over the fan-in axis, leaving one number per output neuron.
    return -2 if layout == "in_out" else -1


def scale_by_normuon(
    *,
    beta: float = 0.95,
    b2: float = 0.95,
    eps: float = 1e-10,
    nesterov: bool = True,
    ns_coeffs: Any = "muon",
    ns_steps: int = 5,
    orthogonalizer: Any = None,
    compute_dtype: Any = None,
    scaling: str = "shape",
    rms: float = 0.2,
    layout: str = "in_out",
    batch_ndim: int = 0,
    mu_dtype: Any = None,
) -> optax.GradientTransformation:
    r"""NorMuon: neuron-wise normalized Muon (the modded-nanogpt record optimizer; Li et al. 2025,
    "NorMuon: Making Muon more efficient and scalable", arXiv:2510.05491).

    .. math::
        O_t = \mathrm{orth}(u_t),\quad q_t = \mathrm{mean}_{\text{fan-in}}(O_t^2),\quad
        s_t = b_2 s_{t-1} + (1 - b_2) q_t,\quad
        \tilde O_t = O_t / \sqrt{\max(s_t, \epsilon)},\quad
        \Delta_t = c\, \tilde O_t \|O_t\|_F / \|\tilde O_t\|_F

    one second-moment entry per output neuron (columns of a Flax ``(in, out)`` kernel, rows of a
    PyTorch ``(out, in)`` weight), the result renormalized to the Frobenius norm it had before
    the neuron-wise division, then multiplied by Muon's shape factor ``c`` (``scaling``).
    No bias correction, as in the record code.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_normuon()
      >>> p = {"w": jnp.arange(32.0).reshape(4, 8)}
      >>> u, s = tx.update(p, tx.init(p))
      >>> s.nu["w"].shape
      (1, 1, 8)
    """
    check_scaling(scaling, layout)
    orth = resolve_orthogonalizer(
        orthogonalizer, coeffs=ns_coeffs, steps=ns_steps, dtype=compute_dtype
    )
    axis = _neuron_axis(layout)

    # Applied to the (B, fan_in, fan_out) matrix view: one batch axis.
    factor = functools.partial(shape_factor, scaling=scaling, rms=rms, batch_ndim=1, layout=layout)

    def init_nu(p):
        shape = list(matrix_shape(p.shape, batch_ndim))
        shape[axis] = 1
        return jnp.zeros(shape, accumulation_dtype(p.dtype))

    def step(u, g, count, s):
        del count
        o = orth(u).astype(s.dtype)
        s = b2 * s + (1 - b2) * jnp.mean(jnp.square(o), axis=axis, keepdims=True)
        o_tilde = o * jax.lax.rsqrt(jnp.maximum(s, eps))
        o_tilde = o_tilde * (frobenius(o) / jnp.maximum(frobenius(o_tilde), 1e-10))
        return factor(g.shape) * o_tilde, s

    return scale_by_matrix_momentum(
        step,
        state=NorMuonState,
        beta=beta,
        nesterov=nesterov,
        mu_dtype=mu_dtype,
        batch_ndim=batch_ndim,
        init_stats=init_nu,
    )


def normuon(
    learning_rate: optax.ScalarOrSchedule,
    *,
    beta: float = 0.95,
    b2: float = 0.95,
    eps: float = 1e-10,
    nesterov: bool = True,
    ns_coeffs: Any = "muon",
    ns_steps: int = 5,
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
    """NorMuon on matrices, AdamW on the rest; see :func:`scale_by_normuon`.

    ``labels`` and ``fallback`` (the other leaves): as in :func:`dynamics.optim.muon.muon`.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = normuon(0.02)
      >>> p = {"w": jnp.ones((4, 8)), "b": jnp.zeros(8)}
      >>> _ = tx.update(p, tx.init(p), p)
    """
    return matrix_optimizer(
        scale_by_normuon(
            beta=beta,
            b2=b2,
            eps=eps,
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
