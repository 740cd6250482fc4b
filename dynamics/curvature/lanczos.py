"""Lanczos with full reorthogonalization on pytrees, and the top eigenpairs of a Hessian.

Lanczos (1950) builds an orthonormal basis Q_m of the Krylov space span{v0, A v0, ..., A^{m-1} v0}
of a symmetric operator A together with the tridiagonal T_m = Q_m^T A Q_m (diagonal ``alphas``,
off-diagonal ``betas``). The eigenvalues of T_m (Ritz values) converge to the extreme eigenvalues of
A, first the best separated ones; the Ritz vectors Q_m s approximate the eigenvectors. In floating
point the three-term recurrence loses orthogonality as soon as a Ritz value converges (Paige 1971)
and produces spurious copies of it; here each new vector is reorthogonalized against the whole
basis, which keeps clustered top eigenvalues accurate. "Twice is enough" (two Gram-Schmidt passes)
is met by the recurrence itself as the first pass (it removes the components along the last one or
2s vectors, where all of A q lies in exact arithmetic) and one classical Gram-Schmidt pass against
the full basis as the second: two reads of the m x n basis per step. That pass is memory-bound; on
a CPU at 1.1M parameters it costs about a quarter of an HVP over 512 examples
(``scripts/bench_curvature.py``).

The loop is one ``lax.scan`` (an unrolled 30-step Python loop took 51 s to compile, the scan about
4 s) over pytree vectors: the basis is a pytree with a leading axis of size m on every leaf, so
sharded parameters give sharded Krylov vectors and nothing is raveled.

If the Krylov space is exhausted (beta = 0: v0 lies in an invariant subspace), the iteration
restarts from a pseudo-random vector orthogonal to the basis and records beta = 0, so T_m stays
block tridiagonal and every later Ritz value is still valid.

``eigsh`` and ``top_eigenpairs`` warm start from earlier eigenvectors by growing the Krylov space
from all of them at once (``seeded_rayleigh_ritz``) and report true residuals ||A v - lambda v||.

Example:
  >>> import jax, jax.numpy as jnp
  >>> a = jnp.diag(jnp.arange(1.0, 11.0))
  >>> pairs = eigsh(lambda v: a @ v, jnp.ones(10), k=2, num_iters=10, key=jax.random.key(0))
  >>> jnp.round(pairs.eigenvalues, 4)
  Array([10.,  9.], dtype=float32)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from dynamics.curvature import tree
from dynamics.curvature.compile import eager_cached
from dynamics.curvature.hvp import hvp
from dynamics.curvature.operators import microbatch_mean

PyTree = Any
Matvec = Callable[[PyTree], PyTree]


class LanczosResult(NamedTuple):
    """T = tridiag(betas[:-1], alphas, betas[:-1]) = Q^T A Q.

    Attributes:
      alphas: ``[m]`` the diagonal of T.
      betas: ``[m]``; ``betas[j]`` couples basis vectors j and j + 1; ``betas[m - 1]`` is the norm
        of the residual after the last step (|betas[m-1] s_{m,i}| is the residual of Ritz pair i).
      basis: the orthonormal Krylov basis, a pytree with leading axis ``m`` on every leaf.
      alive: ``[m]`` False for the zero rows left when m exceeds the dimension of the space.
    """

    alphas: jax.Array
    betas: jax.Array
    basis: PyTree
    alive: jax.Array


class Eigenpairs(NamedTuple):
    """Ritz pairs and their true residuals.

    Attributes:
      eigenvalues: ``[k]``, ordered as requested (largest first for ``which="LA"``).
      eigenvectors: a pytree with leading axis ``k``: unit vectors, one per eigenvalue.
      residuals: ``[k]``, ||A v - lambda v|| computed with one extra product per pair.
    """

    eigenvalues: jax.Array
    eigenvectors: PyTree
    residuals: jax.Array


def _is_unit(v: PyTree) -> jax.Array:
    """Whether a new basis vector is a unit vector (not a zero row of an exhausted space).

    Computed from the vector before it is written: reading the row back out of the basis after
    the in-place write would make XLA copy the whole basis every step.
    """
    return tree.norm(v) > 0.5


def lanczos(matvec: Matvec, v0: PyTree, num_iters: int) -> LanczosResult:
    """``num_iters`` steps of Lanczos with full reorthogonalization from ``v0``.

    Args:
      matvec: ``v -> A v`` for a symmetric A, on pytrees shaped like ``v0``.
      v0: the starting vector (any nonzero norm).
      num_iters: m, the Krylov dimension (static).

    Returns:
      A :class:`LanczosResult`.
    """
    q0 = tree.scale(1.0 / tree.norm(v0), v0)
    basis = tree.basis_set(tree.basis_zeros(v0, num_iters), 0, q0)
    dtype = jax.tree.leaves(v0)[0].dtype
    eps = jnp.finfo(dtype).eps

    def body(carry, i):
        basis, beta_prev, size = carry
        q = tree.basis_get(basis, i)
        # q_{i-1} is read back from the basis: carrying it would keep a slice of the basis alive
        # across the in-place write below, and XLA would copy the whole basis every step.
        q_prev = tree.basis_get(basis, jnp.maximum(i - 1, 0))
        w = tree.axpy(-beta_prev, q_prev, matvec(q))
        alpha = tree.vdot(q, w)
        # The recurrence already removed the components along q and q_prev (the first Gram-Schmidt
        # pass of "twice is enough"); one full pass against the basis then removes what rounding
        # left along older vectors, to working precision, at half the memory traffic of two.
        _, w = tree.project_out(basis, tree.axpy(-alpha, q, w))
        beta = tree.norm(w)
        size = jnp.maximum(size, jnp.maximum(jnp.abs(alpha), beta))
        breakdown = beta <= 100 * eps * size
        q_next = jax.lax.cond(
            breakdown,
            lambda b, i: tree.restart_vector(b, i, v0),
            lambda b, i: tree.scale(1.0 / jnp.where(breakdown, 1.0, beta), w),
            basis,
            i,
        )
        beta = jnp.where(breakdown, 0.0, beta)
        # At i = m - 1 the index m is out of bounds and JAX drops the write.
        basis = tree.basis_set(basis, i + 1, q_next)
        return (basis, beta, size), (alpha, beta, _is_unit(q_next))

    zero = jnp.zeros((), dtype)
    (basis, _, _), (alphas, betas, next_alive) = jax.lax.scan(
        body, (basis, zero, zero), jnp.arange(num_iters)
    )
    alive = jnp.concatenate([jnp.ones(1, bool), next_alive[:-1]])
    return LanczosResult(alphas, betas, basis, alive)


def tridiagonal(alphas: jax.Array, betas: jax.Array) -> jax.Array:
    """The dense m x m tridiagonal matrix (``betas[:-1]`` off the diagonal)."""
    off = betas[:-1]
    return jnp.diag(alphas) + jnp.diag(off, 1) + jnp.diag(off, -1)


def ritz(result: LanczosResult) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Ritz values, the eigenvectors S of T and which Ritz values are genuine.

    A Ritz value is spurious when its eigenvector of T lives on zero rows of the basis.
    """
    theta, s = jnp.linalg.eigh(tridiagonal(result.alphas, result.betas))
    valid = jnp.sum(jnp.where(result.alive[:, None], s**2, 0.0), axis=0) > 0.5
    return theta, s, valid


def _select(theta: jax.Array, valid: jax.Array, k: int, which: str) -> jax.Array:
    if which == "LA":
        score = theta
    elif which == "SA":
        score = -theta
    elif which == "LM":
        score = jnp.abs(theta)
    else:
        raise ValueError(f"which must be 'LA', 'SA' or 'LM', got {which!r}")
    return jnp.argsort(-jnp.where(valid, score, -jnp.inf))[:k]


def seeded_rayleigh_ritz(
    matvec: Matvec, seeds: PyTree, num_iters: int
) -> tuple[jax.Array, PyTree, jax.Array]:
    """The projection H = Q^T A Q on a Krylov space grown from several seed vectors.

    The basis starts with the s orthonormalized seeds; processing basis vector j appends
    A q_j orthogonalized against everything so far, so Q spans
    span{S, A S, A^2 S, ...} (block Lanczos with block size s, one product per basis vector).
    With one seed this is Lanczos and H is tridiagonal. Column j of H is Q^T A q_j restricted to
    the vectors present at step j, which includes every row i <= j; H is assembled from that upper
    triangle by symmetry. Returns H (m x m), the basis and which rows are nonzero.
    """
    num_seeds = jax.tree.leaves(seeds)[0].shape[0]
    like = tree.basis_get(seeds, 0)
    basis = jax.tree.map(
        lambda b, s: b.at[:num_seeds].set(s),
        tree.basis_zeros(like, num_iters),
        tree.orthonormalize(seeds),
    )
    dtype = jax.tree.leaves(like)[0].dtype
    eps = jnp.finfo(dtype).eps

    # In exact arithmetic A q_j lies in span(q_{j-s}, ..., q_{j+s}) (band Lanczos): the first
    # Gram-Schmidt pass runs against that window of 2s rows, the second against the whole basis
    # and removes what rounding left elsewhere, which reads the full basis twice instead of four
    # times. A window as large as the basis is simply the basis.
    window = min(2 * num_seeds, num_iters)

    def body(carry, j):
        basis, size = carry
        q = tree.basis_get(basis, j)
        w = matvec(q)
        start = jnp.clip(j - num_seeds, 0, num_iters - window)
        near = jax.tree.map(lambda b: jax.lax.dynamic_slice_in_dim(b, start, window), basis)
        c_near, w = tree.project_out(near, w)
        c1 = jax.lax.dynamic_update_slice_in_dim(
            jnp.zeros(num_iters, c_near.dtype), c_near, start, 0
        )
        c2, w = tree.project_out(basis, w)
        beta = tree.norm(w)
        size = jnp.maximum(size, jnp.max(jnp.abs(c1)))
        breakdown = beta <= 100 * eps * size
        q_next = jax.lax.cond(
            breakdown,
            lambda b, i: tree.restart_vector(b, i, like),
            lambda b, i: tree.scale(1.0 / jnp.where(breakdown, 1.0, beta), w),
            basis,
            j,
        )
        # Writes past the last row are dropped by JAX's out-of-bounds scatter semantics.
        basis = tree.basis_set(basis, j + num_seeds, q_next)
        return (basis, size), (c1 + c2, _is_unit(q_next))

    (basis, _), (columns, next_alive) = jax.lax.scan(
        body, (basis, jnp.zeros((), dtype)), jnp.arange(num_iters)
    )
    seeds_alive = jax.vmap(_is_unit)(tree.basis_get(basis, slice(0, num_seeds)))
    alive = jnp.concatenate([seeds_alive, next_alive])[:num_iters]
    upper = jnp.triu(columns.T)
    return upper + jnp.triu(upper, 1).T, basis, alive


@eager_cached(static_argnames=("k", "num_iters", "which"))
def eigsh(
    matvec: Matvec,
    like: PyTree,
    *,
    k: int = 1,
    num_iters: int = 40,
    key: jax.Array,
    init: PyTree | None = None,
    which: str = "LA",
) -> Eigenpairs:
    """The k extreme eigenpairs of a symmetric operator by Lanczos, with true residuals.

    Without ``init`` this is Lanczos with full reorthogonalization from a Gaussian vector. With
    ``init`` (earlier eigenvectors, e.g. from the previous training step) the Krylov space is grown
    from the earlier vectors *and* a Gaussian one together (see :func:`seeded_rayleigh_ritz`): a
    single start vector could not separate clustered eigenvalues it mixes, while a block of seeds
    reproduces each of them at once; the Gaussian seed keeps new directions reachable.

    Args:
      matvec: ``v -> A v``.
      like: a vector with the structure, shapes and dtypes of A's domain (e.g. the parameters).
      k: how many eigenpairs (static, ``k <= num_iters``).
      num_iters: products spent on the Krylov space (its dimension); k more give the residuals.
      key: for the random start.
      init: earlier eigenvectors (a pytree with a leading axis) to warm start from.
      which: ``"LA"`` largest algebraic, ``"SA"`` smallest algebraic, ``"LM"`` largest magnitude.
    """
    if k > num_iters:
        raise ValueError(f"k = {k} eigenpairs need num_iters >= k, got {num_iters}")
    seeds = jax.tree.map(lambda x: x[None], tree.normal_like(key, like))
    if init is not None:
        seeds = jax.tree.map(lambda a, b: jnp.concatenate([a.astype(b.dtype), b]), init, seeds)
    h, basis, alive = seeded_rayleigh_ritz(matvec, seeds, num_iters)
    theta, s = jnp.linalg.eigh(h)
    valid = jnp.sum(jnp.where(alive[:, None], s**2, 0.0), axis=0) > 0.5
    idx = _select(theta, valid, k, which)
    values = theta[idx]
    vectors = tree.basis_combine(basis, s[:, idx])

    def residual(args):
        lam, v = args
        return tree.norm(tree.axpy(-lam, v, matvec(v)))

    residuals = jax.lax.map(residual, (values, vectors))
    return Eigenpairs(values, vectors, residuals)


@eager_cached(static_argnames=("k", "num_iters", "which", "microbatch_size", "precision"))
def top_eigenpairs(
    loss_fn: Callable[..., jax.Array],
    params: PyTree,
    *args,
    k: int = 1,
    num_iters: int = 40,
    key: jax.Array,
    init: PyTree | None = None,
    which: str = "LA",
    microbatch_size: int | None = None,
    precision: str | None = "highest",
) -> Eigenpairs:
    """Top-k eigenpairs of the Hessian of ``loss_fn(params, *args)`` with respect to ``params``.

    With ``microbatch_size``, every leaf of ``args`` has a leading example axis and ``loss_fn`` is a
    mean over it: the Hessian of the mean over all examples is accumulated over microbatches.
    ``precision`` is the matmul precision of every product (``"highest"`` is true fp32 on GPUs,
    where the default bf16-pass matmuls give 1e-5 to 1e-4 relative error in the top eigenvalue).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> loss = lambda w, b: 0.5 * jnp.mean((b["x"] @ w - b["y"]) ** 2)
      >>> data = {"x": jnp.diag(jnp.array([3.0, 2.0, 1.0])), "y": jnp.zeros(3)}
      >>> pairs = top_eigenpairs(loss, jnp.zeros(3), data, k=1, num_iters=3, key=jax.random.key(0))
      >>> jnp.round(pairs.eigenvalues, 4)  # H = diag(9, 4, 1) / 3
      Array([3.], dtype=float32)
    """
    with jax.default_matmul_precision(precision):

        def matvec(v):
            return microbatch_mean(lambda b: hvp(loss_fn, params, v, *b), args, microbatch_size)

        return eigsh(matvec, params, k=k, num_iters=num_iters, key=key, init=init, which=which)
