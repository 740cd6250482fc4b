"""The tracked eigenpairs of a flow: warm-started Lanczos and the edge band.

A flow tracks the top ``k`` eigenpairs of its (effective) Hessian along the trajectory: H for
gradient descent, P^-1/2 H P^-1/2 for a preconditioned optimizer (``dynamics.curvature``'s
``top_eigenpairs`` and ``preconditioned_sharpness``). Each call grows its Krylov space from the
previous substep's eigenvectors (``init``), which barely move between substeps, so a dozen
products per call keep the residuals small. The *edge set* is the tracked eigenvalues above
``(1 - band) * threshold``: the set grows as soon as an eigenvalue approaches the threshold and
shrinks when one leaves, without any switch in the flow itself (an eigenvalue inside the band but
below the threshold gets no oscillation from the complementarity problem). ``k`` is the most
eigenvalues that may be at the edge at once; if the k-th eigenvalue is in the band the flow is
told (``full``) so that ``k`` can be raised.

The directions a_i = P^-1/2 q_i (q_i the unit eigenvectors of the symmetric operator) are the
right eigenvectors of P^-1 H, the directions in weight space the optimizer oscillates along.

Example:
  >>> import jax, jax.numpy as jnp
  >>> a = jnp.arange(3.0)
  >>> loss = lambda w, b: 0.5 * jnp.sum(b * w**2)
  >>> pairs = eigenpairs(loss, jnp.ones(3), None, a, k=1, num_iters=3, key=jax.random.key(0))
  >>> jnp.round(pairs.eigenvalues, 4)
  Array([2.], dtype=float32)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from dynamics.curvature import tree
from dynamics.curvature.lanczos import Eigenpairs, top_eigenpairs
from dynamics.curvature.preconditioned import preconditioned_sharpness
from dynamics.curvature.third_order import stacked_dots

PyTree = Any


def eigenpairs(
    loss_fn: Callable[..., jax.Array],
    params: PyTree,
    preconditioner: PyTree | None,
    *args,
    k: int,
    num_iters: int,
    key: jax.Array,
    init: PyTree | None = None,
) -> Eigenpairs:
    """Top-k eigenpairs of H (``preconditioner`` None) or of P^-1/2 H P^-1/2."""
    if preconditioner is None:
        return top_eigenpairs(
            loss_fn, params, *args, k=k, num_iters=num_iters, key=key, init=init, precision=None
        )
    return preconditioned_sharpness(
        loss_fn,
        params,
        preconditioner,
        *args,
        k=k,
        num_iters=num_iters,
        key=key,
        init=init,
        precision=None,
    )


def directions(vectors: PyTree, preconditioner: PyTree | None) -> PyTree:
    """a_i = P^-1/2 q_i for the stacked eigenvectors q (q itself without a preconditioner)."""
    if preconditioner is None:
        return vectors
    inv_sqrt = jax.tree.map(lambda p: 1.0 / jnp.sqrt(p), preconditioner)
    return jax.vmap(lambda v: tree.mul(inv_sqrt, v))(vectors)


def in_band(eigenvalues: jax.Array, threshold: float, band: float) -> jax.Array:
    """Which eigenvalues are at the edge: above ``(1 - band) * threshold``."""
    return eigenvalues > (1.0 - band) * threshold


def align(x: jax.Array, new: PyTree, old: PyTree) -> jax.Array:
    """A covariance written in the ``old`` eigenbasis, rewritten in the ``new`` one.

    X_new = O X_old O^T with O_ij = <new_i, old_j>: exact when both bases span the same space,
    and it follows reordering and sign flips of the eigenvectors between substeps.
    """
    overlap = stacked_dots(new, old, 1, 1)
    return overlap @ x @ overlap.T
