"""The central flow of gradient descent and RMSProp (Cohen et al. 2025).

Cohen, Damian, Talwalkar, Kolter & Lee, "Understanding Optimization in Deep Learning with Central
Flows" (ICLR 2025): at the edge of stability the iterates oscillate, w_t = w(t) + x_t, along the
top eigen-directions of the (effective) Hessian, and the time average of the gradient is, to
third order in x, grad L(w) + 1/2 grad <Sigma, H(w)> with Sigma = E[x x^T] (the cubic term of
Damian, Nichani & Lee 2023's self-stabilization; the linear term H x averages out). With Sigma
written as X in the basis a_1..a_k of the edge directions (Sigma = sum_kl X_kl a_k a_l^T) and
g_kl = grad (a_k^T H a_l) (``dynamics.curvature.curvature_gradients``), the central flow of
gradient descent is

    dw/dt = -lr [grad L(w) + 1/2 sum_kl X_kl g_kl],

and for RMSProp (P = sqrt(nu + eps)) the oscillation also enters the averaged squared gradient,
E[(grad L(w + x))^2] = grad L^2 + diag(H Sigma H):

    dw/dt = -lr P^-1 [grad L + 1/2 sum_kl X_kl g_kl],
    dnu/dt = (1 - d) [grad L^2 + sum_kl X_kl (H a_k) * (H a_l) - nu].

X(t) is PSD and held by complementarity: the k x k edge block K_ij = a_i^T H a_j of the effective
Hessian must stay below the threshold T = 2/lr, and X is nonzero only along directions held at
T. Everything above is linear in X: dK/dt = lr (c0 - M(X)) with, for gradient descent,
c0_ij = -g_ij . grad L (the progressive-sharpening matrix alpha) and M = 1/2 g_ij . g_kl (the
self-stabilization Gram tensor beta / 2); RMSProp adds the terms of nu through
h_ij = dK_ij / dnu (see :func:`_rmsprop_terms`). Posing the condition for the *next* substep of
length dt, T I - K - dt dK/dt >= 0, gives the complementarity problem of
``dynamics.flows.complementarity``:

    X >= 0,   Y = M(X) - c >= 0,   <X, Y> = 0,   c = c0 + (K - T I) / (lr dt).

Its (K - T)/(lr dt) term is a restoring force: imposing dK/dt = 0 alone (the sigma^2 = 2 alpha /
beta formula for one eigenvalue) lets discrete substeps drift off the threshold, while this form
puts the eigenvalues back on it at every substep; it also makes eigenvalues enter and leave the
edge without a switch (one below T gets X = 0 unless the next substep would cross).

Why not diffrax here: X is the solution of a complementarity problem whose data depends on the
substep itself (dt enters c), so the vector field is defined per substep, not as a function of
(t, w) that an adaptive Runge-Kutta method could sample at its stage points; its projection is
also only piecewise smooth. The flow takes explicit Euler substeps (``dt``, default 1/2 step) with
X frozen over each, the authors' discretization. The stable flow (``dynamics.flows.stable``),
whose vector field is smooth, is integrated by diffrax.

Predictions: GD's time-averaged loss is L(w) + 1/2 <Sigma, H> = L(w) + 1/2 sum_i X_ii lambda_i
(``predicted_loss``) and the variance of the oscillation along a_i is X_ii (``variances``).

Cost of one substep (k tracked eigenpairs, m Lanczos products): m + k HVPs for the warm-started
eigenpairs and their residuals, a (a + 1) / 2 third-derivative vectors for the a directions in the
edge band (one forward-forward-reverse pass each, about 3-4 gradients; none before the edge), one
gradient, and for RMSProp k more HVPs. ``scripts/bench_flows.py`` measures it.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from dynamics.flows.optimizers import Optimizer
  >>> loss = lambda w, b: 0.5 * jnp.sum(b * w**2)  # a quadratic: no edge, gradient flow
  >>> opt = Optimizer("sgd", learning_rate=0.1)
  >>> flow = CentralFlow(loss, opt, k=1, num_iters=3)
  >>> state = flow.init({"w": jnp.ones(3)}, jax.random.key(0))
  >>> state, info = flow.advance(state, jax.random.key(1), jnp.arange(3.0))
  >>> [round(float(w), 4) for w in state.state["w"]]  # (1 - lr a dt)^2 = 1, 0.9025, 0.81
  [1.0, 0.9025, 0.81]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from dynamics.curvature import tree
from dynamics.curvature.hvp import hvp
from dynamics.curvature.third_order import curvature_gradients, stacked_dots
from dynamics.flows import complementarity, edge
from dynamics.flows.optimizers import Optimizer

PyTree = Any


class CentralState(NamedTuple):
    """Attributes:
    state: the optimizer's continuous state ``{"w"}`` (and ``"nu"`` for RMSProp).
    vectors: the k tracked unit eigenvectors (leading axis k), the warm start of the next call.
    x: ``[k, k]`` the oscillation covariance in the basis of the tracked directions.
    """

    state: dict
    vectors: PyTree
    x: jax.Array


class CentralInfo(NamedTuple):
    """Diagnostics of the last substep.

    Attributes:
      loss: L(w).
      predicted_loss: L(w) + 1/2 sum_i X_ii lambda_i, the predicted time-averaged loss.
      eigenvalues: ``[k]`` the tracked (effective) eigenvalues.
      residuals: ``[k]`` their Lanczos residuals.
      variances: ``[k]`` X_ii, the predicted oscillation variance along each direction.
      active: ``[k]`` whether each direction is in the edge band.
      full: True when the k-th tracked eigenvalue is in the band (raise k).
      gap: the complementarity gap <X, Y>.
      infeasibility: how far Y is from PSD.
    """

    loss: jax.Array
    predicted_loss: jax.Array
    eigenvalues: jax.Array
    residuals: jax.Array
    variances: jax.Array
    active: jax.Array
    full: jax.Array
    gap: jax.Array
    infeasibility: jax.Array


def _combine(coeffs: jax.Array, stack: PyTree) -> PyTree:
    """sum_kl coeffs_kl stack_kl for a ``(k, k)`` stack of vectors."""
    return jax.tree.map(lambda s: jnp.tensordot(coeffs, s, axes=([0, 1], [0, 1])), stack)


def _outer_products(vectors: PyTree) -> PyTree:
    """The ``(k, k)`` stack of element-wise products v_k * v_l."""
    return jax.tree.map(lambda v: v[:, None] * v[None, :], vectors)


def _rmsprop_terms(opt, state, grads, vectors, dirs, g, h_dirs, preconditioner):
    """c0 and M for RMSProp (see the module doc).

    h_ij = dK_ij/dnu with K_ij = (s q_i)^T H (s q_j), s = P^-1/2:
    h_ij = ds/dnu * (q_i * H a_j + q_j * H a_i), ds/dnu = -1/2 P^-3/2 dP/dnu.
    """
    lr = opt.learning_rate
    ds = jax.tree.map(
        lambda p, dp: -0.5 * p**-1.5 * dp, preconditioner, opt.preconditioner_derivative(state)
    )
    cross = jax.tree.map(lambda q, ha: q[:, None] * ha[None, :], vectors, h_dirs)
    h = jax.tree.map(lambda d, x: d * (x + jnp.swapaxes(x, 0, 1)), ds, cross)
    pg = jax.tree.map(lambda x, p: x / p, g, preconditioner)
    p_grads = jax.tree.map(lambda x, p: x / p, grads, preconditioner)
    drift = jax.tree.map(lambda x, n: x**2 - n, grads, state["nu"])
    c0 = -stacked_dots(g, p_grads, 2, 0) + (1.0 - opt.decay) / lr * stacked_dots(h, drift, 2, 0)
    m = 0.5 * stacked_dots(g, pg, 2, 2) - (1.0 - opt.decay) / lr * stacked_dots(
        h, _outer_products(h_dirs), 2, 2
    )
    return c0, m


def random_basis(key: jax.Array, like: PyTree, k: int) -> PyTree:
    """k random orthonormal vectors shaped like ``like`` (leading axis k)."""
    return tree.orthonormalize(
        jax.vmap(lambda kk: tree.normal_like(kk, like))(jax.random.split(key, k))
    )


class CentralFlow:
    """The central flow of an :class:`Optimizer` on ``loss_fn(params, *args)``.

    Args:
      loss_fn: ``loss_fn(params, *args) -> scalar`` (the full-batch loss).
      opt: the optimizer (gradient descent or RMSProp).
      k: eigenpairs tracked (the most that may be at the edge at once).
      num_iters: Lanczos products per substep (warm-started).
      dt: the substep, in optimizer steps (1 / dt substeps per step).
      band: the edge band, eigenvalues above ``(1 - band) * threshold``.
      solver_iters: projected-gradient iterations of the complementarity solver per substep.
    """

    def __init__(
        self,
        loss_fn: Callable[..., jax.Array],
        opt: Optimizer,
        *,
        k: int = 4,
        num_iters: int = 12,
        dt: float = 0.5,
        band: float = 0.1,
        solver_iters: int = 60,
    ):
        if not 0 < dt <= 1 or abs(round(1.0 / dt) - 1.0 / dt) > 1e-9:
            raise ValueError(f"dt must be 1/n for an integer n >= 1, got {dt}")
        self.loss_fn, self.opt, self.k, self.num_iters = loss_fn, opt, k, num_iters
        self.dt, self.band, self.solver_iters = dt, band, solver_iters
        self.substeps = round(1.0 / dt)
        self.advance = jax.jit(self._advance)

    def _pairs(self, state, key, args, init):
        p = self.opt.preconditioner(state) if self.opt.adaptive else None
        pairs = edge.eigenpairs(
            self.loss_fn, state["w"], p, *args, k=self.k, num_iters=self.num_iters, key=key,
            init=init,
        )  # fmt: skip
        return pairs, p

    def init(self, state: dict, key: jax.Array, vectors: PyTree | None = None) -> CentralState:
        """A central state at ``state`` with no oscillation.

        ``vectors`` (k stacked unit vectors) start the eigenvector tracking; by default k random
        orthonormal ones, which the first substep's Krylov space (grown from them and a Gaussian
        vector) turns into eigenvectors.
        """
        if vectors is None:
            vectors = random_basis(key, state["w"], self.k)
        dtype = jax.tree.leaves(state["w"])[0].dtype
        return CentralState(state, vectors, jnp.zeros((self.k, self.k), dtype))

    def substep(self, cs: CentralState, key: jax.Array, *args) -> tuple[CentralState, CentralInfo]:
        """One Euler substep of length ``dt`` (see the module doc)."""
        opt, state = self.opt, cs.state
        w = state["w"]
        pairs, p = self._pairs(state, key, args, cs.vectors)
        lam, vectors = pairs.eigenvalues, pairs.eigenvectors
        dirs = edge.directions(vectors, p)
        loss, grads = jax.value_and_grad(self.loss_fn)(w, *args)
        threshold = opt.threshold
        active = edge.in_band(lam, threshold, self.band)
        # Third derivatives only along the directions at the edge: X is zero elsewhere.
        g = curvature_gradients(self.loss_fn, w, dirs, *args, mask=active)
        if opt.adaptive:
            h_dirs = jax.vmap(lambda a: hvp(self.loss_fn, w, a, *args))(dirs)
            c0, m = _rmsprop_terms(opt, state, grads, vectors, dirs, g, h_dirs, p)
        else:
            c0 = -stacked_dots(g, grads, 2, 0)
            m = 0.5 * stacked_dots(g, g, 2, 2)
        c = c0 + jnp.diag(lam - threshold) / (opt.learning_rate * self.dt)
        x0 = edge.align(cs.x, vectors, cs.vectors)
        sol = complementarity.solve(m, c, num_iters=self.solver_iters, init=x0, mask=active)
        x = sol.x
        force = tree.axpy(0.5, _combine(x, g), grads)
        nu_target = None
        if opt.adaptive:
            nu_target = tree.add(
                jax.tree.map(jnp.square, grads), _combine(x, _outer_products(h_dirs))
            )
        rate = opt.velocity(state, force, nu_target)
        new_state = jax.tree.map(lambda s, r: s + self.dt * r, state, rate)
        variances = jnp.diagonal(x)
        info = CentralInfo(
            loss=loss,
            predicted_loss=loss + 0.5 * jnp.sum(variances * lam),
            eigenvalues=lam,
            residuals=pairs.residuals,
            variances=variances,
            active=active,
            full=active[-1],
            gap=sol.gap,
            infeasibility=sol.infeasibility,
        )
        return CentralState(new_state, vectors, x), info

    def _advance(self, cs: CentralState, key: jax.Array, *args):
        """One optimizer step of time, ``1 / dt`` substeps, from t to t + 1.

        Returns the state at t + 1 and the info of the first substep, i.e. at time t.
        """
        cs, info = self.substep(cs, jax.random.fold_in(key, 0), *args)

        def body(cs, i):
            return self.substep(cs, jax.random.fold_in(key, i), *args)[0], None

        cs, _ = jax.lax.scan(body, cs, jnp.arange(1, self.substeps))
        return cs, info
