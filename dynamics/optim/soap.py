"""SOAP: Adam in the eigenbasis of Shampoo's preconditioner (Vyas et al. 2024, arXiv:2409.11321).

For a matrix gradient ``G`` SOAP keeps Shampoo's statistics as EMAs (decay ``shampoo_beta``,
default ``b2``) and their eigenbases ``Q_L``, ``Q_R``, and runs Adam on the rotated gradient:

    G' = Q_L^T G Q_R
    m <- b1 m + (1 - b1) G',        v <- b2 v + (1 - b2) G'^2          (kept in the rotated basis)
    D = Q_L (m / (sqrt(v + eps_root) + eps)) Q_R^T * sqrt(1 - b2^t) / (1 - b1^t)
    L <- b L + (1 - b) G G^T,       R <- b R + (1 - b) G^T G          (after the step)

as in the reference implementation (``nikhilvyas/SOAP``): the first call only initializes the
statistics and takes ``Q`` from ``eigh`` (eigenvalues descending), returning a zero update so that
the current gradient never sees its own basis; every ``precondition_frequency`` Adam steps the
basis is refreshed by one power iteration and a QR decomposition, ``Q <- qr(S Q)``, after sorting
the columns of ``Q`` (and the matching axis of ``v``) by the estimated eigenvalues
``diag(Q^T S Q)``; ``m`` is carried over to the new basis. A k-axis tensor gets one factor per
axis; axes longer than ``max_precond_dim`` and 1-D leaves are left unrotated (plain Adam).

Ablations of "What Really Matters in Matrix-Whitening Optimizers?" (2025):
``one_sided=True`` rotates only the shortest axis; ``variance_adaptation=False`` replaces Adam's
``m / sqrt(v)`` by ``sign(m)`` in the eigenbasis, for every leaf (spectral normalization only, as
in SPlus).

Layout: every axis is treated alike, so Flax ``(in, out)`` and PyTorch ``(out, in)`` kernels give
the same rule. Weight decay in :func:`soap` is the reference's: decoupled, applied after the step
to the updated weights, ``p <- (p - lr D)(1 - lr wd)``, and not on the first call (which only
sets up the basis and leaves the weights as they are).

Example:
  >>> import jax.numpy as jnp, optax
  >>> from dynamics.optim.soap import soap
  >>> params = {"w": jnp.ones((4, 3)), "b": jnp.zeros(3)}
  >>> tx = soap(3e-3)
  >>> state = tx.init(params)
  >>> updates, state = tx.update(params, state, params)
  >>> params = optax.apply_updates(params, updates)
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from dynamics.optim import kronecker_factors as kr
from dynamics.optim.common import accumulation_dtype


class SoapState(NamedTuple):
    """State of :func:`scale_by_soap`.

    Attributes:
      count: number of calls so far (the first only sets up the basis; Adam's step is count - 1).
      mu: first moment in the rotated basis, like the parameters.
      nu: second moment in the rotated basis, like the parameters.
      stats: per leaf, a tuple with one ``d x d`` EMA statistic per axis (``None``: unrotated axis).
      basis: per leaf, the eigenbases ``Q`` in use, same shapes as ``stats``.
    """

    count: chex.Array
    mu: optax.Updates
    nu: optax.Updates
    stats: chex.ArrayTree
    basis: chex.ArrayTree


def _qr_refresh(stat, q, nu, axis):
    """One power iteration after sorting ``Q`` by its Rayleigh quotients (and ``nu`` with it)."""
    order = jnp.argsort(-jnp.diag(q.T @ stat @ q))
    q = q[:, order]
    nu = jnp.take(nu, order, axis=axis)
    q, _ = jnp.linalg.qr(stat @ q)
    return q, nu


def scale_by_soap(
    *,
    b1: float = 0.95,
    b2: float = 0.95,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    shampoo_beta: float | None = None,
    precondition_frequency: int = 10,
    max_precond_dim: int = 10000,
    one_sided: bool = False,
    variance_adaptation: bool = True,
) -> optax.GradientTransformation:
    """SOAP's step (see the module docstring); the first call returns zeros.

    Args:
      b1, b2: Adam's decays, applied in the rotated basis.
      eps: added to ``sqrt(v)`` (not bias corrected, as in the reference).
      eps_root: added to ``v`` inside the square root (as optax's Adam): 0 is the reference;
        a tiny positive value makes the step differentiable where ``v = 0`` (a weight that never
        gets a gradient), which ``step_stability`` needs.
      shampoo_beta: decay of the statistics; ``None`` uses ``b2``.
      precondition_frequency: Adam steps between two refreshes of the basis.
      max_precond_dim: axes longer than this are not rotated.
      one_sided: rotate only the shortest axis of each tensor.
      variance_adaptation: ``False`` steps with ``sign(m)`` in the eigenbasis instead.
    """
    sb = b2 if shampoo_beta is None else shampoo_beta

    def axes_of(shape):
        return kr.factored_axes(shape, max_precond_dim, one_sided)

    def init_fn(params):
        leaves, treedef = jax.tree.flatten(params)
        stats, basis = [], []
        for p in leaves:
            axes, dtype = axes_of(p.shape), accumulation_dtype(p.dtype)
            stats.append(
                tuple(
                    jnp.zeros((d, d), dtype) if u else None
                    for u, d in zip(axes, p.shape, strict=True)
                )
            )
            basis.append(
                tuple(
                    jnp.eye(d, dtype=dtype) if u else None
                    for u, d in zip(axes, p.shape, strict=True)
                )
            )
        return SoapState(
            count=jnp.zeros([], jnp.int32),
            mu=optax.tree.zeros_like(params),
            nu=optax.tree.zeros_like(params),
            stats=treedef.unflatten(stats),
            basis=treedef.unflatten(basis),
        )

    def new_stats(leaves, stats_leaves):
        out = []
        for g, leaf in zip(leaves, stats_leaves, strict=True):
            grams = kr.gram_matrices(g.astype(accumulation_dtype(g.dtype)), axes_of(g.shape))
            out.append(
                tuple(
                    None if s is None else (sb * s + (1.0 - sb) * c).astype(s.dtype)
                    for s, c in zip(leaf, grams, strict=True)
                )
            )
        return out

    def first_call(updates, state, count):
        leaves, treedef = jax.tree.flatten(updates)
        stats = new_stats(leaves, treedef.flatten_up_to(state.stats))
        basis = [
            tuple(None if s is None else kr.eigh_descending(s)[1] for s in leaf) for leaf in stats
        ]
        new_state = state._replace(
            count=count, stats=treedef.unflatten(stats), basis=treedef.unflatten(basis)
        )
        return optax.tree.zeros_like(updates), new_state

    def adam_call(updates, state, count):
        t = count - 1
        leaves, treedef = jax.tree.flatten(updates)
        basis = treedef.flatten_up_to(state.basis)
        rotated = [
            kr.mode_product(g.astype(accumulation_dtype(g.dtype)), q, transpose=True)
            for g, q in zip(leaves, basis, strict=True)
        ]
        mu = [
            (b1 * m + (1.0 - b1) * r).astype(m.dtype)
            for m, r in zip(jax.tree.leaves(state.mu), rotated, strict=True)
        ]
        nu = [
            (b2 * v + (1.0 - b2) * r * r).astype(v.dtype)
            for v, r in zip(jax.tree.leaves(state.nu), rotated, strict=True)
        ]
        if variance_adaptation:
            scale = jnp.sqrt(1.0 - b2**t) / (1.0 - b1**t)
            steps = [
                scale * m / (jnp.sqrt(v + eps_root) + eps) for m, v in zip(mu, nu, strict=True)
            ]
        else:
            steps = [jnp.sign(m) for m in mu]
        out = [
            kr.mode_product(s.astype(accumulation_dtype(g.dtype)), q).astype(g.dtype)
            for s, q, g in zip(steps, basis, leaves, strict=True)
        ]
        stats = new_stats(leaves, treedef.flatten_up_to(state.stats))

        def refresh(operand):
            stats, basis, mu, nu = operand
            new_basis, new_mu, new_nu = [], [], []
            for leaf_stats, qs, m, v in zip(stats, basis, mu, nu, strict=True):
                dtype = m.dtype
                m = kr.mode_product(m.astype(accumulation_dtype(dtype)), qs)
                qs = list(qs)
                for axis, s in enumerate(leaf_stats):
                    if s is not None:
                        qs[axis], v = _qr_refresh(s, qs[axis], v, axis)
                new_basis.append(tuple(qs))
                new_mu.append(kr.mode_product(m, qs, transpose=True).astype(dtype))
                new_nu.append(v)
            return new_basis, new_mu, new_nu

        basis, mu, nu = jax.lax.cond(
            t % precondition_frequency == 0,
            refresh,
            lambda operand: operand[1:],
            (stats, basis, mu, nu),
        )
        new_state = SoapState(
            count=count,
            mu=treedef.unflatten(mu),
            nu=treedef.unflatten(nu),
            stats=treedef.unflatten(stats),
            basis=treedef.unflatten(basis),
        )
        return treedef.unflatten(out), new_state

    def update_fn(updates, state, params=None):
        del params
        count = optax.safe_increment(state.count)
        return jax.lax.cond(count == 1, first_call, adam_call, updates, state, count)

    return optax.GradientTransformation(init_fn, update_fn)


class DecayAfterStepState(NamedTuple):
    """State of :func:`decay_after_step`.

    Attributes:
      count: number of updates so far (int32), the step at which the learning rate is read.
    """

    count: chex.Array


def decay_after_step(
    weight_decay: float, learning_rate: optax.ScalarOrSchedule
) -> optax.GradientTransformation:
    """Decoupled weight decay of the *updated* weights, skipped on the first call.

    Chained after ``scale_by_learning_rate``: with ``u = -lr D`` it returns
    ``u - lr wd (p + u)``, so that ``p + u_out = (p - lr D)(1 - lr wd)`` as in SOAP's reference
    code (``p.add_(D, alpha=-lr); p.add_(p, alpha=-lr * wd)``). The first call returns ``u``
    unchanged: there the reference only initializes the preconditioner and touches no weight.
    """

    def init_fn(params):
        del params
        return DecayAfterStepState(count=jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("soap's weight decay needs the parameters: update(u, state, params)")
        lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
        factor = jnp.where(state.count == 0, 0.0, lr * weight_decay)
        updates = jax.tree.map(lambda u, p: u - (factor * (p + u)).astype(u.dtype), updates, params)
        return updates, DecayAfterStepState(count=optax.safe_increment(state.count))

    return optax.GradientTransformation(init_fn, update_fn)


def soap(
    learning_rate: optax.ScalarOrSchedule = 3e-3,
    *,
    b1: float = 0.95,
    b2: float = 0.95,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    shampoo_beta: float | None = None,
    precondition_frequency: int = 10,
    max_precond_dim: int = 10000,
    one_sided: bool = False,
    variance_adaptation: bool = True,
    weight_decay: float = 0.01,
) -> optax.GradientTransformation:
    """SOAP with the reference's decoupled weight decay (defaults of the paper).

    ``scale_by_soap -> scale_by_learning_rate -> decay_after_step``: every call after the first
    steps ``p <- (p - lr D)(1 - lr wd)``; the first call leaves the weights unchanged.
    """
    return optax.chain(
        scale_by_soap(
            b1=b1,
            b2=b2,
            eps=eps,
            eps_root=eps_root,
            shampoo_beta=shampoo_beta,
            precondition_frequency=precondition_frequency,
            max_precond_dim=max_precond_dim,
            one_sided=one_sided,
            variance_adaptation=variance_adaptation,
        ),
        optax.scale_by_learning_rate(learning_rate),
        decay_after_step(weight_decay, learning_rate),
    )
