"""Sharpness-aware gradients: SAM, ASAM, finite-difference gradient regularization, flooding.

One transform covers the family. With ``g`` the incoming update (the loss gradient at ``w``, or
what an earlier filter made of it) it returns

    g_out = s * [(1 - alpha) g + alpha grad L(w + rho d)]

with the ascent direction

    d = T^2 g / (||T g|| + eps)    (normalized, the default)
    d = T^2 g                      (unnormalized, ``normalize=False``)

where ``T = 1`` (SAM) or ``T = |w| + eta`` element-wise (ASAM, ``adaptive=True``), the norm is
taken over the whole parameter tree, and ``s = sign(L(w) - b)`` under flooding at level ``b``
(``s = 1`` otherwise).

* SAM (Foret et al. 2021): ``alpha = 1``, ``d = g / ||g||``; rho 0.05-0.1.
* ASAM (Kwon et al. 2021): ``alpha = 1``, ``T = |w| + eta``; rho 0.5, eta 0.01 in the reference.
  The reference code scales only tensors named ``weight`` and leaves biases at ``T = 1``, which
  the default ``adaptive_mask="matrices"`` reproduces for models whose only vectors are biases;
  ``adaptive_mask="all"`` scales every parameter, as the paper's ``T_w`` is written.
* Finite-difference gradient regularization: the gradient of ``L + lambda ||grad L||`` is
  ``g + lambda H g / ||g||``; the forward difference of ``grad L`` along ``d = g / ||g||`` with
  step ``r`` turns it into the formula above with ``alpha = lambda / r`` (the gradient norm
  penalty of Zhao et al. 2022, the default). Karakida et al. 2023 penalize
  ``(lambda / 2) ||grad L||^2``, whose gradient ``g + lambda H g`` is the same formula with the
  unnormalized step ``d = g`` (``normalize=False``, their F-GR); ``alpha = 1`` there is
  unnormalized SAM.
* Unnormalized SAM ("SAM operates far from home", Agarwala & Dauphin 2023): on a quadratic with
  Hessian eigenvalue ``lambda``, SAM + GD multiplies that eigen-component by ``1 - lr lambda (1 +
  rho lambda)``, so it is linearly stable up to ``lr lambda (1 + rho lambda) = 2``.
* Flooding (Ishida et al. 2020): the gradient of ``|L - b| + b`` is ``sign(L - b) grad L``; below
  the flood level the step ascends. It needs the current loss as the extra argument ``loss=``.

The perturbed gradient comes from the keyword extra argument ``grad_fn(params) -> grads`` (the
gradient of the current batch's loss), so the transform is a
:class:`optax.GradientTransformationExtraArgs` that chains before any base optimizer
(:func:`sam` and its relatives take that optimizer as a transform, as ``optax.contrib.sam``
does). It costs one extra gradient per step (none when ``alpha = 0``) and keeps no copy of the
parameters; its state :class:`SharpnessAwareState` holds the norm ``||rho d||`` of the last
perturbation, for the runner to log.

Example:
  >>> import jax, jax.numpy as jnp, optax
  >>> loss = lambda w: 0.5 * jnp.sum(jnp.array([1.0, 10.0]) * w**2)
  >>> tx = sam(optax.sgd(0.1, momentum=0.9), rho=0.05)
  >>> w = jnp.array([1.0, 1.0])
  >>> state = tx.init(w)
  >>> updates, state = tx.update(jax.grad(loss)(w), state, w, grad_fn=jax.grad(loss))
  >>> w = optax.apply_updates(w, updates)
  >>> round(float(state[0].perturbation_norm), 6)
  0.05
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from dynamics.optim.common import accumulation_dtype

_NO_PARAMS = "sharpness-aware rules need the parameters: call update(grads, state, params, ...)"
ADAPTIVE_MASKS = ("all", "matrices")

AdaptiveMask = None | str | Any | Callable[[optax.Params], Any]


class SharpnessAwareState(NamedTuple):
    """State of :func:`scale_by_sharpness_aware` and its relatives.

    Attributes:
      perturbation_norm: ``||rho d||`` over the whole tree of the last perturbation ``e = rho d``
        (0 before the first update and when ``alpha == 0``), a scalar in at least float32.
    """

    perturbation_norm: chex.Array


def _is_number(x, value: float) -> bool:
    return isinstance(x, int | float) and x == value


def _resolve_mask(adaptive_mask: AdaptiveMask, params: optax.Params):
    """Returns a tree of Python bools: True where ASAM scales by ``|w| + eta``."""
    if adaptive_mask is None or adaptive_mask == "all":
        return jax.tree.map(lambda _: True, params)
    if adaptive_mask == "matrices":
        return jax.tree.map(lambda w: w.ndim > 1, params)
    return adaptive_mask(params) if callable(adaptive_mask) else adaptive_mask


def _check_mask(adaptive_mask: AdaptiveMask) -> None:
    if isinstance(adaptive_mask, str) and adaptive_mask not in ADAPTIVE_MASKS:
        raise ValueError(
            f"unknown adaptive_mask {adaptive_mask!r}; choices: {', '.join(ADAPTIVE_MASKS)}, "
            "None (all), a tree of bools or a callable"
        )


def _norm_dtype(params: optax.Params):
    leaves = jax.tree.leaves(params)
    return accumulation_dtype(jnp.result_type(*leaves) if leaves else jnp.float32)


def scale_by_sharpness_aware(
    *,
    rho: float = 0.05,
    alpha: float = 1.0,
    normalize: bool = True,
    adaptive: bool = False,
    eta: float = 0.01,
    adaptive_mask: AdaptiveMask = None,
    flood_level: float | None = None,
    eps: float = 1e-12,
) -> optax.GradientTransformationExtraArgs:
    """Replaces ``g`` by ``s [(1 - alpha) g + alpha grad L(w + rho d(w, g))]`` (see the module).

    Args:
      rho: perturbation radius (the finite-difference step ``r`` for gradient regularization).
      alpha: weight of the perturbed gradient: 1 for SAM/ASAM, ``lambda / r`` for gradient-norm
        regularization, 0 to skip the perturbation (flooding alone).
      normalize: divide the direction by ``||T g|| + eps`` (SAM); False gives ``d = T^2 g``.
      adaptive: ASAM's ``T = |w| + eta``; False gives ``T = 1``.
      eta: ASAM's offset, which keeps zero weights perturbable.
      adaptive_mask: which leaves ASAM scales (the others keep ``T = 1``): None or ``"all"`` for
        all, ``"matrices"`` for leaves with ``ndim > 1``, a tree of bools, or a callable
        ``params -> tree of bools``.
      flood_level: flooding level ``b``; then ``update`` needs ``loss=`` (the loss at ``params``).
      eps: added to the norm, so a zero gradient gives a zero perturbation, not NaN.

    Returns:
      A :class:`optax.GradientTransformationExtraArgs` whose ``update`` takes ``grad_fn=``
      (required unless ``alpha == 0``) and ``loss=`` (required with flooding); its state is a
      :class:`SharpnessAwareState`.
    """
    _check_mask(adaptive_mask)

    def init_fn(params):
        return SharpnessAwareState(perturbation_norm=jnp.zeros([], _norm_dtype(params)))

    def update_fn(updates, state, params=None, *, grad_fn=None, loss=None, **extra_args):
        del extra_args
        if flood_level is not None and loss is None:
            raise ValueError("flooding needs the current loss: call update(..., loss=L(params))")
        # alpha is an array under optax.inject_hyperparams: only a Python 0 or 1 takes a shortcut.
        perturb = not _is_number(alpha, 0)
        if perturb and grad_fn is None:
            raise ValueError(
                "sharpness-aware rules need the extra argument grad_fn(params) -> grads: "
                "call update(grads, state, params, grad_fn=...)"
            )
        if perturb and params is None:
            raise ValueError(_NO_PARAMS)
        out, norm = updates, jnp.zeros_like(state.perturbation_norm)
        if perturb:
            tg, direction = updates, updates
            if adaptive:
                mask = _resolve_mask(adaptive_mask, params)

                def by_t(u, w, m):
                    return u * (jnp.abs(w) + eta).astype(u.dtype) if m else u

                tg = jax.tree.map(by_t, updates, params, mask)
                direction = jax.tree.map(by_t, tg, params, mask)
            factor = rho / (optax.tree.norm(tg) + eps) if normalize else rho
            perturbation = jax.tree.map(lambda d: factor * d, direction)
            norm = optax.tree.norm(perturbation).astype(norm.dtype)
            perturbed = jax.tree.map(lambda w, e: w + e.astype(w.dtype), params, perturbation)
            adversarial = grad_fn(perturbed)
            if _is_number(alpha, 1):
                out = adversarial
            else:
                out = jax.tree.map(lambda g, ga: (1 - alpha) * g + alpha * ga, updates, adversarial)
        if flood_level is not None:
            sign = jnp.where(loss < flood_level, -1.0, 1.0)
            out = jax.tree.map(lambda u: sign.astype(u.dtype) * u, out)
        return out, SharpnessAwareState(perturbation_norm=norm)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def scale_by_sam(
    *,
    rho: float = 0.05,
    normalize: bool = True,
    flood_level: float | None = None,
    eps: float = 1e-12,
) -> optax.GradientTransformationExtraArgs:
    """SAM's gradient ``grad L(w + rho g / ||g||)`` (``normalize=False``: ``w + rho g``)."""
    return scale_by_sharpness_aware(
        rho=rho, alpha=1.0, normalize=normalize, flood_level=flood_level, eps=eps
    )


def scale_by_asam(
    *,
    rho: float = 0.5,
    eta: float = 0.01,
    normalize: bool = True,
    adaptive_mask: AdaptiveMask = "matrices",
    flood_level: float | None = None,
    eps: float = 1e-12,
) -> optax.GradientTransformationExtraArgs:
    """ASAM's gradient ``grad L(w + rho T^2 g / ||T g||)`` with ``T = |w| + eta``.

    ``adaptive_mask="matrices"`` (the reference code's behaviour: only weight tensors are
    scaled, biases keep ``T = 1``); ``"all"`` scales every leaf.
    """
    return scale_by_sharpness_aware(
        rho=rho,
        alpha=1.0,
        normalize=normalize,
        adaptive=True,
        eta=eta,
        adaptive_mask=adaptive_mask,
        flood_level=flood_level,
        eps=eps,
    )


def scale_by_gradient_norm_regularization(
    *,
    strength: float = 0.01,
    radius: float = 0.05,
    normalize: bool = True,
    flood_level: float | None = None,
    eps: float = 1e-12,
) -> optax.GradientTransformationExtraArgs:
    """Forward-difference gradient of ``L + strength ||grad L||`` (Zhao et al. 2022).

    ``(1 - a) g + a grad L(w + radius g / ||g||)`` with ``a = strength / radius``; with
    ``normalize=False`` the penalty is ``(strength / 2) ||grad L||^2`` and the step ``radius g``
    (Karakida et al. 2023's forward finite-difference GR, F-GR).
    """
    if isinstance(radius, int | float) and radius <= 0:
        raise ValueError(f"gradient_norm_regularization needs radius > 0, got {radius}")
    return scale_by_sharpness_aware(
        rho=radius,
        alpha=strength / radius,
        normalize=normalize,
        flood_level=flood_level,
        eps=eps,
    )


def sam(
    base_optimizer: optax.GradientTransformation,
    *,
    rho: float = 0.05,
    normalize: bool = True,
    flood_level: float | None = None,
    eps: float = 1e-12,
) -> optax.GradientTransformationExtraArgs:
    """SAM (Foret et al. 2021): ``base_optimizer`` steps with ``grad L(w + e)``, as
    ``optax.contrib.sam`` takes its outer optimizer.

    Args:
      base_optimizer: the optax transform that consumes the perturbed gradient (it carries the
        learning rate and any weight decay).
      rho: perturbation radius.
      normalize: False gives unnormalized SAM, ``e = rho g``.
      flood_level: optional flooding level (``update`` then needs ``loss=``).
      eps: added to ``||g||``.

    Returns:
      ``chain(scale_by_sam(...), base_optimizer)``; its state's first entry is the
      :class:`SharpnessAwareState`.
    """
    tx = scale_by_sam(rho=rho, normalize=normalize, flood_level=flood_level, eps=eps)
    return optax.chain(tx, base_optimizer)


def asam(
    base_optimizer: optax.GradientTransformation,
    *,
    rho: float = 0.5,
    eta: float = 0.01,
    normalize: bool = True,
    adaptive_mask: AdaptiveMask = "matrices",
    flood_level: float | None = None,
    eps: float = 1e-12,
) -> optax.GradientTransformationExtraArgs:
    """ASAM (Kwon et al. 2021) before ``base_optimizer``: :func:`scale_by_asam`, :func:`sam`."""
    tx = scale_by_asam(
        rho=rho,
        eta=eta,
        normalize=normalize,
        adaptive_mask=adaptive_mask,
        flood_level=flood_level,
        eps=eps,
    )
    return optax.chain(tx, base_optimizer)


def gradient_norm_regularization(
    base_optimizer: optax.GradientTransformation,
    *,
    strength: float = 0.01,
    radius: float = 0.05,
    normalize: bool = True,
    flood_level: float | None = None,
    eps: float = 1e-12,
) -> optax.GradientTransformationExtraArgs:
    """Finite-difference gradient-norm regularization before ``base_optimizer``.

    See :func:`scale_by_gradient_norm_regularization` and :func:`sam`.
    """
    tx = scale_by_gradient_norm_regularization(
        strength=strength,
        radius=radius,
        normalize=normalize,
        flood_level=flood_level,
        eps=eps,
    )
    return optax.chain(tx, base_optimizer)
