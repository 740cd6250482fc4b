r"""Scion: steps along the linear minimization oracle (LMO) of a per-layer norm ball.

Reference: Pethick, Xie, Antonakopoulos, Zhu, Silveti-Falls, Cevher (2025), "Training Deep
Learning Models with Norm-Constrained LMOs", arXiv:2502.07529 (the modular-norm family of
Bernstein & Newhouse). With the EMA momentum ``d_t = b d_{t-1} + (1 - b) g_t`` (the paper's
``(1 - alpha) d + alpha g`` with ``alpha = 1 - b``) and ``lmo(d) = argmin_{||x|| <= rho} <d, x>
= -rho * dir(d)``:

* unconstrained (uSCG): ``p <- p - lr rho dir(d_t)``;
* constrained (SCG, Frank-Wolfe): ``p <- (1 - lr) p - lr rho dir(d_t)``, which keeps
  ``||p|| <= rho`` for ``lr`` in [0, 1] once it holds; in optax terms this is
  ``add_decayed_weights(1.0)`` before the learning rate, which the alias chains.

``dir`` for the norms (``norm=``), on the matrix view ``(B, rows, cols)`` of
:mod:`dynamics.optim.partition` (rows = fan-in for the Flax ``(in, out)`` layout):

* ``"spectral"``: ``sqrt(fan_out / fan_in) * orth(d)`` (RMS->RMS operator norm; hidden layers);
* ``"sign"``: ``sign(d)`` (the max-norm ball; the paper's choice for embeddings / 1-hot inputs);
* ``"column"``: every column scaled to Euclidean norm ``sqrt(rows)`` (unit RMS per column);
* ``"row"``: every row scaled to Euclidean norm ``sqrt(cols)``.

``"column"`` and ``"row"`` name the axes of the matrix view as stored, whatever ``layout`` says
(``layout`` only sets the fan-in/fan-out factor of ``"spectral"``). The reference code's
``ColNorm`` gives every *input unit* unit RMS: the columns of a PyTorch ``(out, in)`` weight,
and, with its ``transpose=True`` meant for ``(vocab, d)`` embedding tables, every token's
embedding. So for a Flax ``(vocab, d)`` ``nn.Embed`` table (and a Flax ``(in, out)`` kernel)
Scion's ``ColNorm`` is ``norm="row"`` here, and for PyTorch ``(out, in)`` weights it is
``norm="column"``. The reference's ``RowNorm`` (one row per output neuron of ``(out, in)``)
has the direction of ``"column"`` on a Flax kernel; it scales each neuron to norm
``1 / sqrt(fan_in)`` (``normalized=True``) instead of ``sqrt(fan_in)``, a constant factor
``radius`` absorbs. Its ``normalized=True`` ``ColNorm`` (divided by ``fan_in`` for non-input
layers) is likewise ``radius = 1 / fan_in``.
"""

from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp
import optax

from dynamics.optim.common import accumulation_dtype, scale_by_matrix_momentum
from dynamics.optim.muon import MuonState
from dynamics.optim.orthogonalizers import resolve_orthogonalizer
from dynamics.optim.partition import fan_in_out, matrix_optimizer

NORMS = ("spectral", "sign", "column", "row")


def _normalize_lines(x, axis, eps=1e-12):
    norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True))
    return x * (math.sqrt(x.shape[axis]) / (norm + eps))


def scale_by_scion(
    *,
    beta: float = 0.9,
    norm: str = "spectral",
    radius: float = 1.0,
    ns_coeffs: Any = "muon",
    ns_steps: int = 5,
    orthogonalizer: Any = None,
    compute_dtype: Any = None,
    layout: str = "in_out",
    batch_ndim: int = 0,
    mu_dtype: Any = None,
) -> optax.GradientTransformation:
    r"""Scion's direction ``radius * dir(d_t)`` for the chosen norm (see the module docstring).

    Args:
      beta: momentum decay ``b`` (the paper's ``1 - alpha``).
      norm: ``"spectral"``, ``"sign"``, ``"column"`` or ``"row"`` (module doc).
      radius: the norm-ball radius ``rho``.
      ns_coeffs, ns_steps, orthogonalizer, compute_dtype: the orthogonalizer of ``"spectral"``,
        as in :func:`dynamics.optim.muon.scale_by_muon`.
      layout: ``"in_out"`` (Flax) or ``"out_in"`` (PyTorch): which axis is the fan-in of the
        ``"spectral"`` factor; the other norms ignore it.
      batch_ndim: leading axes of every leaf that index independent matrices.
      mu_dtype: momentum dtype (default: the leaf's).

    Example:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_scion(norm="sign")
      >>> p = {"w": jnp.arange(-4.0, 4.0).reshape(2, 4)}
      >>> u, _ = tx.update(p, tx.init(p))
      >>> u["w"][0].tolist()
      [-1.0, -1.0, -1.0, -1.0]
    """
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; choices: {', '.join(NORMS)}")
    orth = resolve_orthogonalizer(
        orthogonalizer, coeffs=ns_coeffs, steps=ns_steps, dtype=compute_dtype
    )

    def direction(d, shape):
        if norm == "spectral":
            fan_in, fan_out = fan_in_out(shape, 1, layout)  # of the (B, fan_in, fan_out) view
            return math.sqrt(fan_out / fan_in) * orth(d)
        if norm == "sign":
            return jnp.sign(d)
        d = d.astype(accumulation_dtype(d.dtype))
        return _normalize_lines(d, axis=-2 if norm == "column" else -1)

    def step(d, g, count):
        # d is the EMA momentum itself (heavy ball, no Nesterov look-ahead).
        del count
        return (radius * direction(d, g.shape),)

    return scale_by_matrix_momentum(
        step, state=MuonState, beta=beta, nesterov=False, mu_dtype=mu_dtype, batch_ndim=batch_ndim
    )


def scion(
    learning_rate: optax.ScalarOrSchedule,
    *,
    beta: float = 0.9,
    norm: str = "spectral",
    radius: float = 1.0,
    constrained: bool = False,
    ns_coeffs: Any = "muon",
    ns_steps: int = 5,
    orthogonalizer: Any = None,
    compute_dtype: Any = None,
    layout: str = "in_out",
    batch_ndim: int = 0,
    mu_dtype: Any = None,
    weight_decay: float = 0.0,
    labels: Any = None,
    fallback: optax.GradientTransformation | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Scion on matrices (uSCG, or Frank-Wolfe SCG with ``constrained=True``), AdamW on the rest.

    ``labels`` and ``fallback`` (the other leaves): as in :func:`dynamics.optim.muon.muon`.

    ``constrained=True`` uses ``weight_decay = 1`` (``p <- (1 - lr) p - lr radius dir``); then
    ``weight_decay`` must be left at 0 and the learning rate should lie in [0, 1].

    Example:
      >>> import jax.numpy as jnp
      >>> tx = scion(0.05, constrained=True)
      >>> p = {"w": jnp.ones((4, 8)), "b": jnp.zeros(8)}
      >>> _ = tx.update(p, tx.init(p), p)
    """
    if constrained and isinstance(weight_decay, int | float) and weight_decay != 0:
        raise ValueError("scion(constrained=True) already decays by 1; leave weight_decay at 0")
    return matrix_optimizer(
        scale_by_scion(
            beta=beta,
            norm=norm,
            radius=radius,
            ns_coeffs=ns_coeffs,
            ns_steps=ns_steps,
            orthogonalizer=orthogonalizer,
            compute_dtype=compute_dtype,
            layout=layout,
            batch_ndim=batch_ndim,
            mu_dtype=mu_dtype,
        ),
        learning_rate,
        weight_decay=1.0 if constrained else weight_decay,
        labels=labels,
        batch_ndim=batch_ndim,
        fallback=fallback,
    )
