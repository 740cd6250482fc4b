r"""Pieces the update rules of this package share: accumulation dtype, momentum, shape factors.

* :func:`accumulation_dtype`: statistics, norms and Kronecker factors are kept in at least
  float32 (bfloat16 and float16 leaves accumulate in float32; float64 stays float64).
* :func:`momentum_direction`: the Muon-family momentum (Jordan et al. 2024)
  ``m <- b m + (1 - b) g`` and the direction fed to the orthogonalizer, ``u = (1 - b) g + b m``
  (Nesterov) or ``u = m`` (heavy ball); ``bias_correction=True`` uses optax.contrib.muon's form
  ``u = b m / (1 - b^{t+1}) + (1 - b) g / (1 - b^t)``.
* :func:`shape_factor`: the scalar multiplying an orthogonalized matrix ``O`` (``scaling=``):

  - ``"shape"``: ``sqrt(max(1, fan_out / fan_in))`` (Keller Jordan's Muon);
  - ``"consistent_rms"``, alias ``"spectral"``: ``rms sqrt(max(fan_in, fan_out))`` (Moonlight,
    Liu et al. 2025, "Muon is Scalable for LLM Training"; with ``rms = 0.2`` the update RMS
    matches AdamW's). The alias is not the spectral condition's ``sqrt(fan_out / fan_in)``,
    which is ``"unit_rms"`` below;
  - ``"unit_rms"``: ``sqrt(fan_out / fan_in)`` (the spectral condition of Yang, Simon &
    Bernstein 2023: an orthogonal step with spectral norm ``sqrt(fan_out / fan_in)``);
  - ``"none"``.

  Fan-in and fan-out follow :func:`dynamics.optim.partition.fan_in_out` (``layout="in_out"``
  for Flax kernels, ``"out_in"`` for PyTorch weights).
* :func:`split_tree`: a tree of per-leaf tuples (what ``jax.tree.map`` of a multi-output leaf
  function returns) into one tree per output.
* :func:`scale_by_matrix_momentum`: the skeleton of every rule of the family (count, momentum,
  matrix view, optional per-leaf statistics), so that a rule's module holds only its own step.

Example:
  >>> import jax.numpy as jnp
  >>> accumulation_dtype(jnp.bfloat16), accumulation_dtype(jnp.float64)
  (dtype('float32'), dtype('float64'))
  >>> shape_factor((4, 16), scaling="shape")
  2.0
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from dynamics.optim.partition import LAYOUTS, fan_in_out, to_matrices

SCALINGS = ("shape", "consistent_rms", "spectral", "unit_rms", "none")


def accumulation_dtype(dtype: Any) -> jnp.dtype:
    """The dtype statistics are accumulated in: at least float32, float64 stays float64."""
    return jnp.promote_types(dtype, jnp.float32)


def frobenius(x: jax.Array) -> jax.Array:
    """Per-matrix Frobenius norm of a ``(B, m, n)`` stack, ``(B, 1, 1)``, in at least float32."""
    x = x.astype(accumulation_dtype(x.dtype))
    return jnp.sqrt(jnp.sum(x * x, axis=(-2, -1), keepdims=True))


def check_scaling(scaling: str, layout: str) -> None:
    """Raises ValueError naming the valid choices for an unknown ``scaling`` or ``layout``."""
    if scaling not in SCALINGS:
        raise ValueError(f"unknown scaling {scaling!r}; choices: {', '.join(SCALINGS)}")
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choices: {', '.join(LAYOUTS)}")


def shape_factor(
    shape: tuple[int, ...],
    *,
    scaling: str,
    rms: float = 0.2,
    batch_ndim: int = 0,
    layout: str = "in_out",
) -> float:
    """The scalar multiplying an orthogonalized update of a leaf of ``shape`` (module doc)."""
    fan_in, fan_out = fan_in_out(shape, batch_ndim, layout)
    if scaling == "shape":
        return math.sqrt(max(1.0, fan_out / fan_in))
    if scaling in ("consistent_rms", "spectral"):
        return rms * math.sqrt(max(fan_in, fan_out))
    if scaling == "unit_rms":
        return math.sqrt(fan_out / fan_in)
    if scaling == "none":
        return 1.0
    raise ValueError(f"unknown scaling {scaling!r}; choices: {', '.join(SCALINGS)}")


def init_momentum(params: Any, mu_dtype: Any = None) -> Any:
    """Zero momentum per leaf, in ``mu_dtype`` or the leaf's dtype."""
    return jax.tree.map(lambda p: jnp.zeros_like(p, dtype=mu_dtype or p.dtype), params)


def momentum_direction(
    g: jax.Array,
    m: jax.Array,
    count: jax.Array,
    *,
    beta: float,
    nesterov: bool,
    bias_correction: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """Returns ``(new_m, u)``: the EMA momentum and the direction to orthogonalize (module doc)."""
    m = (beta * m + (1 - beta) * g.astype(m.dtype)).astype(m.dtype)
    if not bias_correction:
        u = (1 - beta) * g + beta * m.astype(g.dtype) if nesterov else m.astype(g.dtype)
        return m, u
    t = count.astype(accumulation_dtype(g.dtype))
    m_hat = m.astype(g.dtype) / (1 - beta ** (t + 1)).astype(g.dtype)
    if nesterov:
        return m, (beta * m_hat + (1 - beta) * g / (1 - beta**t).astype(g.dtype))
    return m, m.astype(g.dtype) / (1 - beta**t).astype(g.dtype)


def split_tree(like: Any, out: Any, n: int) -> tuple[Any, ...]:
    """Splits ``out``, a tree of ``n``-tuples shaped like ``like``, into ``n`` trees."""
    return jax.tree.transpose(jax.tree.structure(like), jax.tree.structure((0,) * n), out)


def scale_by_matrix_momentum(
    step: Callable[..., tuple[jax.Array, ...]],
    *,
    state: type,
    beta: float,
    nesterov: bool,
    bias_correction: bool = False,
    mu_dtype: Any = None,
    batch_ndim: int = 0,
    init_stats: Callable[[jax.Array], jax.Array] | None = None,
) -> optax.GradientTransformation:
    """A momentum rule on the matrix views of its leaves, around the rule's own ``step``.

    Per leaf ``g`` with momentum ``m`` (and, with ``init_stats``, a statistic ``s`` that starts as
    ``init_stats(param)``): ``m, u = momentum_direction(g, m, count, ...)``, then
    ``step(u, g, count, [s]) -> (update, [new s])`` with ``u`` and ``g`` as ``(B, m, n)`` matrix
    views (:func:`dynamics.optim.partition.to_matrices`). The update is reshaped to the leaf's
    shape and cast to its dtype.

    Args:
      step: the rule's step (see above); ``count`` is the number of updates including this one.
      state: the rule's NamedTuple state class, built as ``state(count, mu)`` or, with
        ``init_stats``, ``state(count, mu, stats)``.
      beta, nesterov, bias_correction: the momentum (:func:`momentum_direction`).
      mu_dtype: momentum dtype (default: the leaf's).
      batch_ndim: leading axes of every leaf that index independent matrices.
      init_stats: the initial statistic of a parameter leaf, or None for a rule without one.
    """
    stateful = init_stats is not None

    def init_fn(params):
        fields = [jnp.zeros([], jnp.int32), init_momentum(params, mu_dtype)]
        if stateful:
            fields.append(jax.tree.map(init_stats, params))
        return state(*fields)

    def update_fn(updates, opt_state, params=None):
        del params
        count = optax.safe_increment(opt_state.count)

        def leaf(g, m, *stats):
            m, u = momentum_direction(
                g, m, count, beta=beta, nesterov=nesterov, bias_correction=bias_correction
            )
            out, *stats = step(
                to_matrices(u, batch_ndim), to_matrices(g, batch_ndim), count, *stats
            )
            return (out.reshape(g.shape).astype(g.dtype), m, *stats)

        trees = (updates, opt_state.mu, *opt_state[2:3])
        new_updates, mu, *stats = split_tree(updates, jax.tree.map(leaf, *trees), len(trees))
        return new_updates, state(count, mu, *stats)

    return optax.GradientTransformation(init_fn, update_fn)
