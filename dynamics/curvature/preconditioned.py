"""Sharpness in an optimizer's geometry: the top eigenvalues of P^-1/2 H P^-1/2.

A diagonal preconditioner P (a pytree of positive arrays shaped like the parameters) turns the step
w <- w - lr P^-1 g into gradient descent on u = P^1/2 w, whose Hessian is P^-1/2 H P^-1/2; its top
eigenvalue is the "preconditioned sharpness" that adaptive optimizers drive to their stability
threshold (Cohen et al. 2022, "Adaptive gradient methods at the edge of stability"): for Adam with
b1 = 0.9 it equilibrates at (2 + 2 b1)/((1 - b1) lr) = 38/lr (see ``thresholds``). The eigenvalues
equal those of the generalized problem H x = lambda P x; the eigenvectors returned are those of the
symmetric operator, in the u coordinates (x = P^-1/2 u).

P from an optax state: ``adam_preconditioner`` searches the optimizer state pytree (any chain, any
nesting) for the first ``optax.ScaleByAdamState`` (``adam``, ``adamw``, ``nadam``...) and builds
P = sqrt(nu / (1 - b2^t)) + eps with t the state's step count; ``rmsprop_preconditioner`` looks for
``optax.ScaleByRmsState`` and builds optax's default P = sqrt(nu + eps) (``eps_in_sqrt=True``) or
sqrt(nu) + eps. The learning rate is not inside P. b2 and eps are not stored in optax states and
must be passed: take them from the optimizer config.

Example:
  >>> import jax, jax.numpy as jnp, optax
  >>> params = jnp.ones(3)
  >>> state = optax.adam(1e-3).init(params)
  >>> _, state = optax.adam(1e-3).update(jnp.array([1.0, 2.0, 4.0]), state)
  >>> jnp.round(adam_preconditioner(state, b2=0.999, eps=0.0), 4)  # |g| after one step
  Array([1., 2., 4.], dtype=float32)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from dynamics.curvature import tree
from dynamics.curvature.compile import eager_cached
from dynamics.curvature.hvp import hvp
from dynamics.curvature.lanczos import Eigenpairs, eigsh
from dynamics.curvature.operators import microbatch_mean

PyTree = Any


def find_state(opt_state: PyTree, state_type: type) -> Any | None:
    """The first node of type ``state_type`` in an optax state, depth first; None if absent."""
    found = [
        s
        for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, state_type))
        if isinstance(s, state_type)
    ]
    return found[0] if found else None


def adam_preconditioner(opt_state: PyTree, *, b2: float, eps: float) -> PyTree:
    """P = sqrt(nu_hat) + eps from the first ``optax.ScaleByAdamState`` in ``opt_state``.

    nu_hat = nu / (1 - b2^t) with t = ``count``, the bias correction of the last update applied.
    """
    state = find_state(opt_state, optax.ScaleByAdamState)
    if state is None:
        raise ValueError("no optax.ScaleByAdamState in the optimizer state")
    t = jnp.maximum(state.count, 1)

    def p(n):
        # 1 - b2^t as -expm1(t log b2): no cancellation when b2^t is close to 1.
        correction = -jnp.expm1(t.astype(n.dtype) * math.log(b2))
        return jnp.sqrt(n / correction) + eps

    return jax.tree.map(p, state.nu)


def rmsprop_preconditioner(opt_state: PyTree, *, eps: float, eps_in_sqrt: bool = True) -> PyTree:
    """P from the first ``optax.ScaleByRmsState``: sqrt(nu + eps) (optax's default) or
    sqrt(nu) + eps."""
    state = find_state(opt_state, optax.ScaleByRmsState)
    if state is None:
        raise ValueError("no optax.ScaleByRmsState in the optimizer state")
    if eps_in_sqrt:
        return jax.tree.map(lambda n: jnp.sqrt(n + eps), state.nu)
    return jax.tree.map(lambda n: jnp.sqrt(n) + eps, state.nu)


def preconditioned_operator(
    matvec: Callable[[PyTree], PyTree], preconditioner: PyTree
) -> Callable[[PyTree], PyTree]:
    """v -> P^-1/2 A P^-1/2 v for a diagonal P given as a pytree."""
    inv_sqrt = jax.tree.map(lambda p: 1.0 / jnp.sqrt(p), preconditioner)
    return lambda v: tree.mul(inv_sqrt, matvec(tree.mul(inv_sqrt, v)))


@eager_cached(static_argnames=("k", "num_iters", "microbatch_size", "precision"))
def preconditioned_sharpness(
    loss_fn: Callable[..., jax.Array],
    params: PyTree,
    preconditioner: PyTree,
    *args,
    k: int = 1,
    num_iters: int = 40,
    key: jax.Array,
    init: PyTree | None = None,
    microbatch_size: int | None = None,
    precision: str | None = "highest",
) -> Eigenpairs:
    """Top-k eigenpairs of P^-1/2 H P^-1/2, H the Hessian of ``loss_fn(params, *args)``.

    Arguments as in :func:`dynamics.curvature.top_eigenpairs`; ``preconditioner`` is P.
    """
    with jax.default_matmul_precision(precision):

        def matvec(v):
            return microbatch_mean(lambda b: hvp(loss_fn, params, v, *b), args, microbatch_size)

        return eigsh(
            preconditioned_operator(matvec, preconditioner),
            params,
            k=k,
            num_iters=num_iters,
            key=key,
            init=init,
        )
