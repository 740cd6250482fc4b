"""Gradient filters chained before any optimizer: Grokfast (EMA and MA), orthogonal gradient.

* ``grokfast_ema`` (Lee et al. 2024): ``ema <- alpha ema + (1 - alpha) g``, ``g <- g + lamb ema``,
  with the EMA started at the first gradient as in the reference, so the first step returns
  ``(1 + lamb) g``. Defaults alpha 0.98, lamb 2.0.
* ``grokfast_ma`` (Lee et al. 2024): ``g <- g + lamb mean(last window gradients)``, the mean
  including the current gradient. Warm-up as in the reference: with ``warmup=True`` (default) the
  gradient passes unchanged until ``window`` gradients have been seen, i.e. for the first
  ``window - 1`` steps; with ``warmup=False`` the mean runs over the gradients seen so far. The
  state holds the last ``window`` gradients (``window`` times the parameters' memory, as in the
  reference). Defaults window 100, lamb 5.0.
* ``orthogonal_gradient`` (Prieto et al. 2025, ⊥Grad): per tensor,
  ``g_perp = g - (w.g) / (w.w + 1e-30) w``, rescaled to the norm of ``g``
  (``g_perp ||g|| / (||g_perp|| + 1e-30)``), which removes the naive-loss-minimization direction of
  growing the weights' scale. Dot products are accumulated in at least float32.

Example:
  >>> import jax.numpy as jnp, optax
  >>> tx = optax.chain(grokfast_ema(alpha=0.98, lamb=2.0), optax.adam(1e-3))
  >>> w = {"kernel": jnp.ones((3, 2))}
  >>> state = tx.init(w)
  >>> updates, state = tx.update({"kernel": jnp.full((3, 2), 0.1)}, state, w)
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from dynamics.optim.common import accumulation_dtype

_NO_PARAMS = "orthogonal_gradient needs the parameters: call update(grads, state, params)"


class GrokfastEmaState(NamedTuple):
    """State of :func:`grokfast_ema`.

    Attributes:
      count: number of gradients seen (int32 scalar).
      ema: the exponential moving average of the gradients, shaped like the parameters.
    """

    count: jax.Array
    ema: optax.Updates


def grokfast_ema(*, alpha: float = 0.98, lamb: float = 2.0) -> optax.GradientTransformation:
    """Amplifies the slow gradient component: ``g + lamb ema(g)`` (Grokfast-EMA)."""

    def init_fn(params):
        return GrokfastEmaState(jnp.zeros([], jnp.int32), optax.tree.zeros_like(params))

    def update_fn(updates, state, params=None):
        del params
        first = state.count == 0
        ema = jax.tree.map(
            lambda e, g: jnp.where(first, g, alpha * e + (1 - alpha) * g).astype(e.dtype),
            state.ema,
            updates,
        )
        updates = jax.tree.map(lambda g, e: g + lamb * e.astype(g.dtype), updates, ema)
        return updates, GrokfastEmaState(optax.safe_increment(state.count), ema)

    return optax.GradientTransformation(init_fn, update_fn)


GROKFAST_MA_FILTERS = ("mean", "sum")


class GrokfastMaState(NamedTuple):
    """State of :func:`grokfast_ma`.

    Attributes:
      count: number of gradients seen (int32 scalar).
      history: per leaf, the last ``window`` gradients stacked on a leading axis, written
        cyclically at ``count % window`` (zeros where nothing has been written yet).
    """

    count: jax.Array
    history: optax.Updates


def grokfast_ma(
    *, window: int = 100, lamb: float = 5.0, filter_type: str = "mean", warmup: bool = True
) -> optax.GradientTransformation:
    """Amplifies the moving average (or sum) of the last ``window`` gradients (Grokfast-MA).

    ``g <- g + lamb * filter(last window gradients)`` with ``filter`` their mean
    (``filter_type="mean"``) or their sum (``"sum"``), as in the reference ``gradfilter_ma``.

    Args:
      window: number of gradients kept.
      lamb: amplification of the filtered gradient.
      filter_type: ``"mean"`` (the reference's default) or ``"sum"``.
      warmup: leave the gradient unchanged until the window is full (the reference's default);
        False filters the gradients seen so far from the first step on.
    """
    if filter_type not in GROKFAST_MA_FILTERS:
        raise ValueError(
            f"unknown filter_type {filter_type!r}; choices: {', '.join(GROKFAST_MA_FILTERS)}"
        )
    if window < 1:
        raise ValueError(f"grokfast_ma needs window >= 1, got {window}")

    def init_fn(params):
        history = jax.tree.map(lambda p: jnp.zeros((window, *p.shape), p.dtype), params)
        return GrokfastMaState(jnp.zeros([], jnp.int32), history)

    def update_fn(updates, state, params=None):
        del params
        slot = state.count % window
        history = jax.tree.map(
            lambda h, g: jax.lax.dynamic_update_index_in_dim(h, g.astype(h.dtype), slot, 0),
            state.history,
            updates,
        )
        seen = jnp.minimum(state.count + 1, window)
        gain = lamb / seen if filter_type == "mean" else lamb
        if warmup:
            gain = jnp.where(seen == window, gain, 0.0)
        updates = jax.tree.map(
            lambda g, h: g + (gain * jnp.sum(h, axis=0)).astype(g.dtype), updates, history
        )
        return updates, GrokfastMaState(optax.safe_increment(state.count), history)

    return optax.GradientTransformation(init_fn, update_fn)


def orthogonal_gradient(*, eps: float = 1e-30) -> optax.GradientTransformation:
    """Per tensor, removes the component of ``g`` along ``w`` and restores ``||g||`` (⊥Grad).

    Args:
      eps: added to ``w.w`` and ``||g_perp||`` as in the reference; 1e-30 needs float32 or wider
        accumulation, which the dot products use.
    """

    def project(g, w):
        acc = accumulation_dtype(g.dtype)
        g32, w32 = g.astype(acc), w.astype(acc)
        g_perp = g32 - jnp.vdot(w32, g32) / (jnp.vdot(w32, w32) + eps) * w32
        scale = jnp.linalg.norm(g32.ravel()) / (jnp.linalg.norm(g_perp.ravel()) + eps)
        return (g_perp * scale).astype(g.dtype)

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(_NO_PARAMS)
        return jax.tree.map(project, updates, params), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)
