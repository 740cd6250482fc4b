"""PSGD-Kron: Kronecker-factored preconditioner fitted on the Lie group (Li 2018; Li 2024).

The preconditioner of a tensor with ``k`` axes is ``P = Q^T Q`` with ``Q = Q_1 (x) ... (x) Q_k``;
each ``Q_i`` is upper triangular (``d_i x d_i``) or diagonal. PSGD fits ``P`` so that
``E[P h h^T P] = E[v v^T]`` for pairs ``(v, h)``; here the whitening form of the Kron code uses a
Gaussian probe ``v`` and ``h = m + sqrt(eps_f32) mean|m| v`` (``m``: the debiased momentum, damped
so that a zero gradient still gives a well-posed pair). With

    A = m x_1 Q_1 ... x_k Q_k,          B* = v x_1 Q_1^(-T) ... x_k Q_k^(-T)

and ``X_(i) X_(i)^T`` the Gram matrix of the mode-``i`` unfolding, every factor takes one
multiplicative (Lie-group) step, all from the same ``A`` and ``B*``:

    triangular: Q_i <- Q_i - lr_p triu(A_(i) A_(i)^T - B*_(i) B*_(i)^T) Q_i / ||A A^T + B* B*^T||_lb
    diagonal:   q_i <- q_i - lr_p (diag(A A^T) - diag(B* B*^T)) q_i / max|diag(A A^T + B* B*^T)|

(``||.||_lb`` is a cheap lower bound on the spectral norm). The step is the preconditioned
momentum ``P m = m x_1 Q_1^T Q_1 ... x_k Q_k^T Q_k``, with its RMS clipped to 1.1 per leaf.

The preconditioner is refitted only with probability ``p(t) = clip(exp(-decay (t - flat_start)),
min, max)``: 1.0 for the first ``flat_start`` = 500 steps, then annealed to 0.03. All randomness
comes from the key in the state (``seed`` sets it; no hidden fixed seed): at every step
``key, k_update, k_probe = split(key, 3)``, the refit happens when ``uniform(k_update) < p(t)``
and leaf ``j`` uses the probe ``v_j = normal(fold_in(k_probe, j))``. Factors are rebalanced to
equal max-norms at every refit, which leaves ``P`` unchanged and only prevents over/underflow.

An axis gets a triangular factor when the leaf has at least ``min_ndim_triangular`` axes and the
axis has at most ``max_size_triangular`` entries, else a diagonal one (so 1-D leaves are diagonal).
Every axis is treated alike, so Flax ``(in, out)`` and PyTorch ``(out, in)`` kernels are handled
identically.

Example:
  >>> import jax.numpy as jnp, optax
  >>> from dynamics.optim.psgd_kron import kron
  >>> params = {"w": jnp.ones((4, 3)), "b": jnp.zeros(3)}
  >>> tx = kron(1e-3, seed=0)
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


class KronState(NamedTuple):
    """State of :func:`scale_by_kron`.

    Attributes:
      count: number of updates so far (int32).
      key: the PRNG key (raw ``uint32[2]``) for refit decisions and probe vectors.
      mu: momentum (not debiased), like the parameters.
      qs: per leaf, a tuple with one factor per axis: ``d x d`` upper triangular or ``d`` diagonal.
    """

    count: chex.Array
    key: chex.Array
    mu: optax.Updates
    qs: chex.ArrayTree


def update_probability(count, max_prob=1.0, min_prob=0.03, decay=0.001, flat_start=500):
    """The refit probability ``clip(max_prob exp(-decay (count - flat_start)), min, max)``."""
    return jnp.clip(max_prob * jnp.exp(-decay * (count - flat_start)), min_prob, max_prob)


def _along(x, axis, fn):
    """Applies ``fn`` to the mode-``axis`` unfolding ``[d, rest]`` of ``x`` and folds it back."""
    y = jnp.moveaxis(x, axis, 0)
    shape = y.shape
    y = fn(y.reshape(shape[0], -1)).reshape(shape)
    return jnp.moveaxis(y, 0, axis)


def _apply(x, qs, fn_tri, fn_diag):
    for axis, q in enumerate(qs):
        fn = fn_tri if q.ndim == 2 else fn_diag
        x = _along(x, axis, lambda y, q=q, fn=fn: fn(q, y))
    return x


def _unfold_gram(x, axis, diagonal):
    y = jnp.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)
    return jnp.sum(y * y, axis=1) if diagonal else y @ y.T


def _refit(qs, h, v, lr):
    """One Lie-group step of every factor of a leaf from the pair ``(v, h)``."""
    a = _apply(h, qs, lambda q, y: q @ y, lambda q, y: q[:, None] * y)
    conj_b = _apply(
        v,
        qs,
        lambda q, y: jax.scipy.linalg.solve_triangular(q, y, trans="T", lower=False),
        lambda q, y: y / q[:, None],
    )
    new = []
    for axis, q in enumerate(qs):
        diagonal = q.ndim == 1
        t1 = _unfold_gram(a, axis, diagonal)
        t2 = _unfold_gram(conj_b, axis, diagonal)
        if diagonal:
            scale = jnp.max(jnp.abs(t1 + t2))
            new.append(q - lr * (t1 - t2) * q / jnp.where(scale > 0, scale, 1.0))
        else:
            scale = kr.spectral_norm_lower_bound(t1 + t2)
            new.append(q - lr * jnp.triu(t1 - t2) @ q / jnp.where(scale > 0, scale, 1.0))
    return _balance(new)


def _balance(qs):
    """Rescales the factors to a common max-abs entry; the Kronecker product is unchanged.

    If a factor is all zeros the product is zero whatever the scales, and ``log(0)`` would
    turn every factor into NaN, so the factors are then returned unchanged.
    """
    if len(qs) < 2:
        return qs
    norms = jnp.stack([jnp.max(jnp.abs(q)) for q in qs])
    nonzero = jnp.all(norms > 0)
    safe = jnp.where(nonzero, norms, 1.0)
    target = jnp.exp(jnp.mean(jnp.log(safe)))
    return [q * (target / n) for q, n in zip(qs, safe, strict=True)]


def _precondition(qs, g):
    """``P g = g x_1 Q_1^T Q_1 ... x_k Q_k^T Q_k``."""
    return _apply(g, qs, lambda q, y: q.T @ (q @ y), lambda q, y: (q * q)[:, None] * y)


def scale_by_kron(
    *,
    b1: float = 0.9,
    precond_lr: float = 0.1,
    precond_init_scale: float = 1.0,
    max_size_triangular: int = 8192,
    min_ndim_triangular: int = 2,
    max_update_probability: float = 1.0,
    min_update_probability: float = 0.03,
    update_probability_decay: float = 0.001,
    update_probability_flat_start: int = 500,
    max_rms: float = 1.1,
    seed: int = 0,
) -> optax.GradientTransformation:
    """PSGD-Kron's preconditioned momentum (see the module docstring).

    Args:
      b1: momentum decay (the momentum is debiased before use; 0 disables it).
      precond_lr: step size of the Lie-group refit.
      precond_init_scale: initial ``P = precond_init_scale^2 I``.
      max_size_triangular: longer axes get a diagonal factor.
      min_ndim_triangular: leaves with fewer axes get diagonal factors only.
      max_update_probability, min_update_probability, update_probability_decay,
        update_probability_flat_start: the refit probability schedule.
      max_rms: the preconditioned step of each leaf is scaled down to at most this RMS.
      seed: seeds the key kept in the state.
    """

    def init_fn(params):
        leaves, treedef = jax.tree.flatten(params)
        qs = []
        for p in leaves:
            dtype = accumulation_dtype(p.dtype)
            k = max(p.ndim, 1)
            s = precond_init_scale ** (1.0 / k)
            triangular = p.ndim >= min_ndim_triangular
            qs.append(
                tuple(
                    s * jnp.eye(d, dtype=dtype)
                    if triangular and d <= max_size_triangular
                    else s * jnp.ones(d, dtype)
                    for d in p.shape
                )
            )
        return KronState(
            count=jnp.zeros([], jnp.int32),
            key=jax.random.PRNGKey(seed),
            mu=optax.tree.zeros_like(params),
            qs=treedef.unflatten(qs),
        )

    def update_fn(updates, state, params=None):
        del params
        count = optax.safe_increment(state.count)
        key, k_update, k_probe = jax.random.split(state.key, 3)
        leaves, treedef = jax.tree.flatten(updates)
        mu = [
            (b1 * m + (1.0 - b1) * g).astype(m.dtype)
            for m, g in zip(jax.tree.leaves(state.mu), leaves, strict=True)
        ]
        debiased = [
            ((b1 * m + (1.0 - b1) * g) / (1.0 - b1**count)).astype(accumulation_dtype(g.dtype))
            for m, g in zip(jax.tree.leaves(state.mu), leaves, strict=True)
        ]
        qs = treedef.flatten_up_to(state.qs)

        prob = update_probability(
            count,
            max_update_probability,
            min_update_probability,
            update_probability_decay,
            update_probability_flat_start,
        )

        def refit_all(qs):
            out = []
            for j, (leaf_qs, m) in enumerate(zip(qs, debiased, strict=True)):
                if not leaf_qs:
                    out.append(leaf_qs)
                    continue
                v = jax.random.normal(jax.random.fold_in(k_probe, j), m.shape, m.dtype)
                h = m + jnp.sqrt(jnp.finfo(jnp.float32).eps) * jnp.mean(jnp.abs(m)) * v
                out.append(tuple(_refit(leaf_qs, h, v, precond_lr)))
            return out

        qs = jax.lax.cond(jax.random.uniform(k_update) < prob, refit_all, lambda q: q, qs)

        out = []
        for leaf_qs, m, g in zip(qs, debiased, leaves, strict=True):
            pg = _precondition(leaf_qs, m)
            rms = jnp.sqrt(jnp.mean(pg * pg))
            pg = pg * jnp.minimum(1.0, max_rms / jnp.where(rms > 0, rms, 1.0))
            out.append(pg.astype(g.dtype))
        new_state = KronState(
            count=count, key=key, mu=treedef.unflatten(mu), qs=treedef.unflatten(qs)
        )
        return treedef.unflatten(out), new_state

    return optax.GradientTransformation(init_fn, update_fn)


def kron(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    *,
    b1: float = 0.9,
    precond_lr: float = 0.1,
    precond_init_scale: float = 1.0,
    max_size_triangular: int = 8192,
    min_ndim_triangular: int = 2,
    max_update_probability: float = 1.0,
    min_update_probability: float = 0.03,
    update_probability_decay: float = 0.001,
    update_probability_flat_start: int = 500,
    max_rms: float = 1.1,
    seed: int = 0,
    weight_decay: float = 0.0,
) -> optax.GradientTransformation:
    """PSGD-Kron with decoupled weight decay: ``p <- p - lr (P m + wd p)``."""
    return optax.chain(
        scale_by_kron(
            b1=b1,
            precond_lr=precond_lr,
            precond_init_scale=precond_init_scale,
            max_size_triangular=max_size_triangular,
            min_ndim_triangular=min_ndim_triangular,
            max_update_probability=max_update_probability,
            min_update_probability=min_update_probability,
            update_probability_decay=update_probability_decay,
            update_probability_flat_start=update_probability_flat_start,
            max_rms=max_rms,
            seed=seed,
        ),
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_learning_rate(learning_rate),
    )
