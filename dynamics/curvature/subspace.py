"""How much of a vector lives in the top Hessian eigenspace, and how that space moves.

For an orthonormal basis V = (v_1, ..., v_k) of the top-k eigenspace, the fraction of a vector g
inside it is ||V^T g||^2 / ||g||^2, in [0, 1]. Gur-Ari, Roberts & Dyer (2018, "Gradient descent
happens in a tiny subspace") found it close to 1 for the gradient after a short transient (k the
number of classes). Between two checkpoints the overlap of the top-k eigenspaces is
||V_1^T V_2||_F^2 / k: 1 when the spaces coincide, about k/n for random ones.

Example:
  >>> import jax.numpy as jnp
  >>> v = jnp.eye(4)[:2]  # span{e1, e2}
  >>> float(subspace_fraction(v, jnp.array([1.0, 1.0, 1.0, 1.0])))
  0.5
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from dynamics.curvature import tree

PyTree = Any


@jax.jit
def subspace_fraction(basis: PyTree, v: PyTree) -> jax.Array:
    """||V^T v||^2 / ||v||^2 for an orthonormal basis V (leading axis k on every leaf)."""
    return jnp.sum(tree.basis_dot(basis, v) ** 2) / tree.vdot(v, v)


@jax.jit
def subspace_overlap(basis_a: PyTree, basis_b: PyTree) -> jax.Array:
    """||V_a^T V_b||_F^2 / k for two orthonormal bases of k vectors each."""
    gram = jax.vmap(lambda b: tree.basis_dot(basis_a, b))(basis_b)
    return jnp.sum(gram**2) / gram.shape[0]
