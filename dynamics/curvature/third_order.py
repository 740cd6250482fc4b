"""Third-order curvature: how the Hessian's quadratic forms change with the parameters.

For unit vectors u_1..u_k held fixed, the quadratic forms K_ij(w) = u_i^T H(w) u_j have gradients

    g_ij = grad_w (u_i^T H(w) u_j) = D^3 L(w)[u_i, u_j, .],

the third derivative of the loss contracted twice. When u_i is the eigenvector of a *simple*
eigenvalue lambda_i, g_ii is the gradient of that eigenvalue (first-order perturbation theory:
d lambda = u^T dH u); when eigenvalues are close or tied, the eigenvalues are not differentiable
and only the whole matrix of g_ij describes how the k x k block K evolves. Here every g_ij is
computed as forward-over-forward-over-reverse differentiation of the loss: the mixed directional
second derivative s, t -> L(w + s u_i + t u_j) is two ``jvp``s (no Hessian is formed) and its
gradient in w one reverse pass, about three to four gradients' cost per pair.

The two scalars of self-stabilization (Damian, Nichani & Lee 2023, "Self-Stabilization: The
Implicit Bias of Gradient Descent at the Edge of Stability") come from these vectors: along the
gradient flow dw/dt = -grad L the sharpness S = u^T H u changes at the rate
dS/dt = -grad L . grad S = alpha (progressive sharpening when alpha > 0), and an oscillation of
size x along u moves the iterate by -(eta x^2 / 2) grad S, which lowers S at the rate
beta = ||grad S||^2 per unit of eta x^2 / 2 (self-stabilization). The matrix versions
alpha_ij = -grad L . g_ij and beta_(ij),(kl) = g_ij . g_kl are what the central flow of Cohen et
al. 2025 ("Understanding Optimization in Deep Learning with Central Flows") needs when several
eigenvalues are at the edge.

Example:
  >>> import jax, jax.numpy as jnp
  >>> loss = lambda w, b: jnp.sum(b["c"] * w**4) / 12  # H = diag(c w^2), D^3 L = diag(2 c w)
  >>> w, u = jnp.array([1.0, 2.0]), jnp.eye(2)
  >>> sharpness_gradient(loss, w, u, {"c": jnp.array([3.0, 1.0])})
  Array([[6., 0.],
         [0., 4.]], dtype=float32)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from dynamics.curvature import tree

PyTree = Any
__all__ = [
    "curvature_gradients",
    "mixed_third_derivative",
    "progressive_sharpening",
    "self_stabilization",
    "sharpness_gradient",
    "stacked_dots",
]


def mixed_third_derivative(
    loss_fn: Callable[..., jax.Array], params: PyTree, u: PyTree, v: PyTree, *args
) -> PyTree:
    """D^3 L(w)[u, v, .] = grad_w (u^T H(w) v), a pytree like ``params``."""

    def second(w):
        def first(w1):
            return jax.jvp(lambda w2: loss_fn(w2, *args), (w1,), (v,))[1]

        return jax.jvp(first, (w,), (u,))[1]

    return jax.grad(second)(params)


def sharpness_gradient(
    loss_fn: Callable[..., jax.Array], params: PyTree, vectors: PyTree, *args
) -> PyTree:
    """grad_w (u_i^T H(w) u_i) for each of the k vectors (leading axis k on every leaf).

    The gradient of the eigenvalue lambda_i when u_i is its unit eigenvector and lambda_i is
    simple; near a tie use :func:`curvature_gradients`.
    """
    return jax.vmap(lambda u: mixed_third_derivative(loss_fn, params, u, u, *args))(vectors)


def curvature_gradients(
    loss_fn: Callable[..., jax.Array],
    params: PyTree,
    vectors: PyTree,
    *args,
    mask: jax.Array | None = None,
) -> PyTree:
    """g_ij = grad_w (u_i^T H(w) u_j) for every pair: leading axes ``(k, k)``, symmetric in i, j.

    Only the k (k + 1) / 2 pairs i <= j are differentiated; the rest are copied by symmetry.
    With ``mask`` (``[k]`` booleans) a pair is differentiated only if both of its vectors are
    selected, the others are zero: the pairs then run one after another under ``lax.cond``, so
    the skipped ones cost nothing (a central flow needs only the directions at the edge).
    """
    k = jax.tree.leaves(vectors)[0].shape[0]
    rows, cols = jnp.triu_indices(k)

    def pair(i, j):
        return mixed_third_derivative(
            loss_fn, params, tree.basis_get(vectors, i), tree.basis_get(vectors, j), *args
        )

    if mask is None:
        upper = jax.vmap(pair)(rows, cols)
    else:

        def maybe(ij):
            i, j = ij
            return jax.lax.cond(mask[i] & mask[j], pair, lambda i, j: tree.zeros_like(params), i, j)

        upper = jax.lax.map(maybe, (rows, cols))

    def square(leaf):
        full = jnp.zeros((k, k) + leaf.shape[1:], leaf.dtype).at[rows, cols].set(leaf)
        return full.at[cols, rows].set(leaf)

    return jax.tree.map(square, upper)


def stacked_dots(a: PyTree, b: PyTree, a_axes: int, b_axes: int) -> jax.Array:
    """Inner products over the parameter axes between stacked vectors.

    ``a`` has ``a_axes`` leading axes on every leaf, ``b`` has ``b_axes``; the result has shape
    ``a_lead + b_lead``: e.g. two ``(k, k)`` stacks give the ``[k, k, k, k]`` tensor of g_ij . g_kl.
    """

    def leaf(x, y):
        x = x.reshape(x.shape[:a_axes] + (-1,))
        y = y.reshape(y.shape[:b_axes] + (-1,))
        return jnp.tensordot(x, y, axes=([-1], [-1]))

    leaves = jax.tree.leaves(jax.tree.map(leaf, a, b))
    return sum(leaves[1:], leaves[0])


def progressive_sharpening(grads: PyTree, gradients: PyTree) -> jax.Array:
    """alpha = -grad L . grad S for stacked ``gradients`` (any number of leading axes).

    With ``gradients`` from :func:`sharpness_gradient` this is ``[k]``; with
    :func:`curvature_gradients` the matrix ``alpha_ij = -grad L . g_ij`` (``[k, k]``).
    """
    axes = jax.tree.leaves(gradients)[0].ndim - jax.tree.leaves(grads)[0].ndim
    return -stacked_dots(gradients, grads, axes, 0)


def self_stabilization(gradients: PyTree, params: PyTree) -> jax.Array:
    """beta = ||grad S||^2 for :func:`sharpness_gradient` output (``[k]``); for the ``(k, k)``
    output of :func:`curvature_gradients`, the Gram tensor ``beta[i, j, k, l] = g_ij . g_kl``.

    ``params`` (or any vector shaped like them) tells the leading axes from the parameter axes.
    """
    axes = jax.tree.leaves(gradients)[0].ndim - jax.tree.leaves(params)[0].ndim
    gram = stacked_dots(gradients, gradients, axes, axes)
    if axes == 1:
        return jnp.diagonal(gram)
    return gram
