"""Kronecker-factor algebra shared by the matrix-whitening rules (Shampoo, SOAP, PSGD-Kron, SPlus).

A gradient tensor ``G`` of shape ``(d_1, ..., d_k)`` is preconditioned by one ``d_i x d_i`` matrix
per axis, ``P = M_1 (x) ... (x) M_k``, which acts on ``G`` without ever being formed:

    (P vec G) = G x_1 M_1 x_2 M_2 ... x_k M_k          (mode products)

and the statistic of axis ``i`` is the Gram matrix of the mode-``i`` unfolding,
``G_(i) G_(i)^T`` (for a matrix: ``G G^T`` for rows and ``G^T G`` for columns).

Axes may be left without a factor (``None``): they are the identity in the product. That is how
the rules fall back to diagonal/one-sided preconditioning for 1-D leaves, for axes above a maximum
size, and for the "one-sided" ablation of Vyas et al. (2024) and "What Really Matters in
Matrix-Whitening Optimizers?" (2025), which keeps a factor on the smaller side only.

Example:
  >>> import jax.numpy as jnp
  >>> g = jnp.arange(6.0).reshape(2, 3)
  >>> axes = factored_axes(g.shape, max_dim=10)
  >>> [s.shape for s in gram_matrices(g, axes)]
  [(2, 2), (3, 3)]
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp


def factored_axes(shape: Sequence[int], max_dim: int, one_sided: bool = False) -> tuple[bool, ...]:
    """Which axes of a tensor carry a Kronecker factor.

    Tensors with fewer than two axes get none (the rules use a diagonal preconditioner for them);
    axes longer than ``max_dim`` get none (their factor would cost ``O(d^2)`` memory and ``O(d^3)``
    per refresh). With ``one_sided`` only the shortest factored axis keeps its factor.
    """
    if len(shape) < 2:
        return (False,) * len(shape)
    mask = [d <= max_dim for d in shape]
    if one_sided and any(mask):
        keep = min((d, i) for i, d in enumerate(shape) if mask[i])[1]
        mask = [i == keep for i in range(len(shape))]
    return tuple(mask)


def mode_product(x: jax.Array, mats: Sequence[jax.Array | None], transpose: bool = False):
    """Returns ``x x_1 M_1 ... x_k M_k`` (``M_i^T`` with ``transpose``); ``None`` is the identity.

    Each step contracts the leading axis and appends the result as the last axis, so after ``k``
    steps the axes are back in their original order.
    """
    for m in mats:
        if m is None:
            x = jnp.moveaxis(x, 0, -1)
        else:
            x = jnp.tensordot(x, m, axes=([0], [0] if transpose else [1]))
    return x


def gram_matrices(g: jax.Array, axes: Sequence[bool]) -> list[jax.Array | None]:
    """The per-axis statistics ``G_(i) G_(i)^T`` for the factored axes (``None`` elsewhere)."""
    out = []
    for i, use in enumerate(axes):
        if use:
            others = [a for a in range(g.ndim) if a != i]
            out.append(jnp.tensordot(g, g, axes=(others, others)))
        else:
            out.append(None)
    return out


def eigh_descending(mat: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Eigenvalues (descending) and eigenvectors (columns, same order) of a symmetric matrix."""
    w, v = jnp.linalg.eigh(0.5 * (mat + mat.T))
    return w[::-1], v[:, ::-1]


def inverse_pth_root(mat: jax.Array, p: float, ridge_epsilon: float) -> jax.Array:
    """``(A + eps * lambda_max(A) I)^(-1/p)`` of a symmetric PSD matrix by ``eigh``.

    The ridge is relative to the largest eigenvalue (as in Distributed Shampoo) so that it is
    invariant to the scale of the gradients; negative eigenvalues from round-off are clipped to 0.
    An all-zero statistic returns an (arbitrarily large) multiple of the identity, which only ever
    multiplies a zero gradient.
    """
    w, v = jnp.linalg.eigh(0.5 * (mat + mat.T))
    w = jnp.maximum(w, 0.0)
    ridge = ridge_epsilon * jnp.maximum(w[-1], jnp.finfo(w.dtype).tiny)
    return (v * (w + ridge) ** (-1.0 / p)) @ v.T


def spectral_norm_lower_bound(mat: jax.Array) -> jax.Array:
    """A cheap lower bound on ``||A||_2`` of a symmetric matrix (Li's PSGD normalizer).

    With ``a`` the column of largest norm, ``||A (A a)|| / ||A a||`` is a Rayleigh-type lower bound
    that is within a small factor of the top singular value in practice; zero for a zero matrix.
    """
    scale = jnp.max(jnp.abs(mat))
    safe = jnp.where(scale > 0, scale, 1.0)
    a = mat / safe
    col = a[:, jnp.argmax(jnp.sum(a * a, axis=0))]
    y = a @ col
    y_norm = jnp.linalg.norm(y)
    bound = jnp.linalg.norm(a @ (y / jnp.where(y_norm > 0, y_norm, 1.0)))
    return jnp.where(scale > 0, scale * bound, 0.0)


def block_shape(shape: Sequence[int], axes: Sequence[bool], block_size: int | None):
    """Block lengths: factored axes longer than ``block_size`` are cut into blocks of that size."""
    if block_size is None:
        return tuple(shape)
    return tuple(min(d, block_size) if use else d for d, use in zip(shape, axes, strict=True))


def to_blocks(x: jax.Array, blocks: Sequence[int]) -> jax.Array:
    """Cuts ``x`` into a stack ``[num_blocks, *blocks]`` (zero-padded to whole blocks).

    Zero padding is harmless for the rules that use it: padded rows of a gradient are zero, so they
    add nothing to the statistics and the (block-diagonal) preconditioned padding stays zero.
    """
    counts = [-(-d // b) for d, b in zip(x.shape, blocks, strict=True)]
    x = jnp.pad(x, [(0, n * b - d) for n, b, d in zip(counts, blocks, x.shape, strict=True)])
    x = x.reshape([v for n, b in zip(counts, blocks, strict=True) for v in (n, b)])
    k = len(blocks)
    x = x.transpose([2 * i for i in range(k)] + [2 * i + 1 for i in range(k)])
    return x.reshape((-1, *blocks))


def from_blocks(xb: jax.Array, shape: Sequence[int]) -> jax.Array:
    """Inverse of :func:`to_blocks`: reassembles ``[num_blocks, *blocks]`` into ``shape``."""
    blocks = xb.shape[1:]
    counts = [-(-d // b) for d, b in zip(shape, blocks, strict=True)]
    k = len(blocks)
    x = xb.reshape((*counts, *blocks))
    x = x.transpose([j for i in range(k) for j in (i, k + i)])
    x = x.reshape([n * b for n, b in zip(counts, blocks, strict=True)])
    return x[tuple(slice(0, d) for d in shape)]
