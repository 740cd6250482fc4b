"""Linear algebra on parameter pytrees: the vector space every curvature routine works in.

A *vector* is a pytree with the structure of the parameters. A *basis* of ``m`` vectors is one
pytree whose leaves carry a leading axis of size ``m`` (what ``jax.vmap`` and ``lax.scan`` produce),
so a Krylov basis keeps each leaf's shape and sharding and is never flattened with
``ravel_pytree``. Inner products are accumulated in the leaves' dtype.

Example:
  >>> import jax.numpy as jnp
  >>> v = {"w": jnp.ones((2, 3)), "b": jnp.ones(3)}
  >>> float(norm(v))
  3.0
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any


def vdot(a: PyTree, b: PyTree) -> jax.Array:
    """<a, b> = sum over leaves of sum(a * b)."""
    leaves = jax.tree.leaves(jax.tree.map(lambda x, y: jnp.vdot(x, y), a, b))
    return sum(leaves[1:], leaves[0])


def norm(a: PyTree) -> jax.Array:
    return jnp.sqrt(vdot(a, a))


def add(a: PyTree, b: PyTree) -> PyTree:
    return jax.tree.map(jnp.add, a, b)


def sub(a: PyTree, b: PyTree) -> PyTree:
    return jax.tree.map(jnp.subtract, a, b)


def scale(s: jax.Array, a: PyTree) -> PyTree:
    return jax.tree.map(lambda x: (s * x).astype(x.dtype), a)


def axpy(s: jax.Array, x: PyTree, y: PyTree) -> PyTree:
    """s x + y."""
    return jax.tree.map(lambda u, v: (s * u + v).astype(v.dtype), x, y)


def mul(a: PyTree, b: PyTree) -> PyTree:
    """Element-wise product (a diagonal operator applied to a vector)."""
    return jax.tree.map(jnp.multiply, a, b)


def zeros_like(a: PyTree) -> PyTree:
    return jax.tree.map(jnp.zeros_like, a)


def normal_like(key: jax.Array, a: PyTree) -> PyTree:
    """A standard Gaussian vector with the structure and dtypes of ``a``."""
    leaves, treedef = jax.tree.flatten(a)
    keys = jax.random.split(key, len(leaves))
    return treedef.unflatten(
        [jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves, strict=True)]
    )


def rademacher_like(key: jax.Array, a: PyTree) -> PyTree:
    """A vector of independent +-1 entries with the structure and dtypes of ``a``."""
    leaves, treedef = jax.tree.flatten(a)
    keys = jax.random.split(key, len(leaves))
    return treedef.unflatten(
        [jax.random.rademacher(k, x.shape, x.dtype) for k, x in zip(keys, leaves, strict=True)]
    )


def hashed_like(i: jax.Array, a: PyTree) -> PyTree:
    """A deterministic pseudo-random vector, entries in [-0.5, 0.5), different for every ``i``.

    Used to restart Krylov iterations after a breakdown, where any vector with a component outside
    the current basis will do. A sine hash of the entry index compiles to a handful of element-wise
    ops, where ``jax.random`` inside a ``lax.scan`` body adds seconds of XLA compile time.
    """
    leaves, treedef = jax.tree.flatten(a)
    out = []
    for j, x in enumerate(leaves):
        t = jax.lax.iota(jnp.float32, x.size).reshape(x.shape)
        h = jnp.sin(t * 12.9898 + (i + 1.0) * 78.233 + j * 37.719) * 43758.5453
        out.append((h - jnp.floor(h) - 0.5).astype(x.dtype))
    return treedef.unflatten(out)


def basis_zeros(a: PyTree, m: int) -> PyTree:
    """A basis of ``m`` zero vectors shaped like ``a``."""
    return jax.tree.map(lambda x: jnp.zeros((m, *x.shape), x.dtype), a)


def basis_get(basis: PyTree, i: jax.Array) -> PyTree:
    return jax.tree.map(lambda q: q[i], basis)


def basis_set(basis: PyTree, i: jax.Array, v: PyTree) -> PyTree:
    return jax.tree.map(lambda q, x: q.at[i].set(x), basis, v)


def basis_dot(basis: PyTree, v: PyTree) -> jax.Array:
    """Q^T v: the ``m`` inner products <q_j, v>."""
    parts = jax.tree.leaves(jax.tree.map(lambda q, x: jnp.tensordot(q, x, axes=x.ndim), basis, v))
    return sum(parts[1:], parts[0])


def basis_combine(basis: PyTree, c: jax.Array) -> PyTree:
    """Q c = sum_j c_j q_j (``c`` of shape ``[m]``) or Q C for ``c`` of shape ``[m, r]``.

    With a matrix ``C`` the result is a basis of ``r`` vectors.
    """
    if c.ndim == 1:
        return jax.tree.map(lambda q: jnp.tensordot(c.astype(q.dtype), q, axes=1), basis)
    return jax.tree.map(lambda q: jnp.tensordot(c.T.astype(q.dtype), q, axes=1), basis)


def project_out(basis: PyTree, v: PyTree) -> tuple[jax.Array, PyTree]:
    """One pass of classical Gram-Schmidt: ``(Q^T v, v - Q Q^T v)``.

    Two reads of the basis; on a large basis this is memory-bound, so callers that already removed
    the bulk of ``v``'s components (a Krylov recurrence) make one pass, not two.
    """
    c = basis_dot(basis, v)
    return c, sub(v, basis_combine(basis, c))


def orthogonalize(basis: PyTree, v: PyTree) -> PyTree:
    """v - Q Q^T v applied twice (classical Gram-Schmidt with one re-orthogonalization).

    Twice is enough (Giraud et al. 2005, "twice is enough"): one pass of classical Gram-Schmidt
    loses orthogonality in proportion to the condition number, the second restores it to machine
    precision. Zero rows of ``Q`` (unfilled slots of a growing basis) contribute nothing.
    """
    for _ in range(2):
        v = project_out(basis, v)[1]
    return v


def restart_vector(basis: PyTree, i: jax.Array, like: PyTree) -> PyTree:
    """A unit vector orthogonal to ``basis``, to continue a Krylov iteration after a breakdown.

    Made from :func:`hashed_like` (``i`` tells the restarts apart). When the basis already spans
    the whole space (more steps than dimensions, toy problems only) nothing is left, and the zero
    vector is returned: its rows decouple and callers flag them as not alive.
    """
    g = hashed_like(i, like)
    v = orthogonalize(basis, g)
    n = norm(v)
    eps = jnp.finfo(jax.tree.leaves(like)[0].dtype).eps
    exhausted = n <= jnp.sqrt(eps) * norm(g)
    return scale(jnp.where(exhausted, 0.0, 1.0 / jnp.where(exhausted, 1.0, n)), v)


def orthonormalize(basis: PyTree) -> PyTree:
    """An orthonormal basis of the span of the rows of ``basis`` (Gram-Schmidt in ``lax.scan``).

    Rows that are (numerically) dependent on earlier ones come out as zero vectors.
    """
    m = jax.tree.leaves(basis)[0].shape[0]

    def body(out, i):
        v = orthogonalize(out, basis_get(basis, i))
        n = norm(v)
        tiny = n <= jnp.finfo(n.dtype).eps * 1e3 * (1.0 + norm(basis_get(basis, i)))
        v = scale(jnp.where(tiny, 0.0, 1.0 / jnp.where(tiny, 1.0, n)), v)
        return basis_set(out, i, v), None

    out, _ = jax.lax.scan(body, jax.tree.map(jnp.zeros_like, basis), jnp.arange(m))
    return out
