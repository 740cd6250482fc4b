"""Curvature of one parameter group: the Hessian block H_bb of a subset of the leaves.

For parameters split into a block b and the rest r, H_bb = d^2 L / db^2 is the principal
sub-block of the Hessian; its products are Hessian-vector products of b -> L(b, r) with r held
fixed, so the tangent lives on the block's leaves only: the Krylov basis, the probes and every
product have the block's size, and nothing of size (block x block) is formed. By Cauchy
interlacing every eigenvalue of a principal sub-block lies within the full spectrum; in
particular lambda_max(H_bb) <= lambda_max(H) and lambda_min(H_bb) >= lambda_min(H), and the
traces add up: tr(H) = sum over a partition into blocks of tr(H_bb).

A block is chosen by

* a path pattern (``fnmatch`` syntax) on the leaf paths ``"Dense_0/kernel"``, ``"Dense_0/bias"``,
  ... that ``jax.tree_util.keystr(path, simple=True, separator="/")`` gives (the model wrapper
  strips Flax's top-level ``"params"``; a pattern may still start with ``"params/"``), e.g.
  ``"Dense_0/*"`` for a whole layer or ``"*/kernel"`` for every weight matrix;
* or a pytree of booleans shaped like the parameters (a mask: True leaves are in the block).

:func:`layer_blocks` names one block per top-level module (``{"Dense_0": "Dense_0/*", ...}``) and
:func:`layer_sharpness` gives the top eigenvalue of every layer's block in one call.

Example:
  >>> import jax, jax.numpy as jnp
  >>> params = {"a": jnp.zeros(2), "b": jnp.zeros(1)}
  >>> loss = lambda p, d: 0.5 * (jnp.sum(d["h"] * p["a"] ** 2) + 5 * p["b"][0] ** 2)
  >>> data = {"h": jnp.array([3.0, 1.0])}
  >>> pairs = block_top_eigenpairs(loss, params, data, block="a", num_iters=2,
  ...                              key=jax.random.key(0))
  >>> jnp.round(pairs.eigenvalues, 4)  # the block of "a" is diag(3, 1); the full top is 5
  Array([3.], dtype=float32)
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from dynamics.curvature.compile import eager_cached
from dynamics.curvature.density import SpectralDensity, slq
from dynamics.curvature.hvp import hvp
from dynamics.curvature.lanczos import Eigenpairs, eigsh
from dynamics.curvature.operators import microbatch_mean
from dynamics.curvature.trace import TraceEstimate, estimator

PyTree = Any
Block = str | PyTree


def leaf_paths(params: PyTree) -> list[str]:
    """The ``"/"``-joined path of every leaf, in ``jax.tree.leaves`` order."""
    return [
        jax.tree_util.keystr(path, simple=True, separator="/")
        for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]
    ]


def block_leaves(params: PyTree, block: Block) -> tuple[bool, ...]:
    """Which leaves (in ``jax.tree.leaves`` order) a pattern or a mask selects.

    Raises ``ValueError`` naming the leaf paths when the block selects nothing.
    """
    paths = leaf_paths(params)
    if isinstance(block, str):
        pattern = block.removeprefix("params/")
        selected = tuple(fnmatch.fnmatchcase(p, pattern) for p in paths)
    else:
        selected = tuple(bool(m) for m in jax.tree.leaves(block))
        if len(selected) != len(paths):
            raise ValueError(f"block mask has {len(selected)} leaves, the parameters {len(paths)}")
    if not any(selected):
        raise ValueError(f"block {block!r} selects no parameter; leaf paths: {', '.join(paths)}")
    return selected


def layer_blocks(params: PyTree) -> dict[str, str]:
    """One block per top-level module: ``{"Dense_0": "Dense_0/*", ...}`` (a top-level leaf is
    its own block)."""
    blocks = {}
    for path in leaf_paths(params):
        head = path.split("/")[0]
        blocks.setdefault(head, f"{head}/*" if "/" in path else head)
    return blocks


def _split(params: PyTree, selected: tuple[bool, ...]):
    leaves, treedef = jax.tree.flatten(params)
    block = [x for x, s in zip(leaves, selected, strict=True) if s]

    def merge(block_leaves):
        it = iter(block_leaves)
        return treedef.unflatten(
            [next(it) if s else x for x, s in zip(leaves, selected, strict=True)]
        )

    return block, merge


def block_operator(
    loss_fn: Callable[..., jax.Array],
    params: PyTree,
    args: tuple,
    selected: tuple[bool, ...],
    microbatch_size: int | None = None,
):
    """``(v -> H_bb v, block)``: the block's Hessian products on lists of the block's leaves."""
    block, merge = _split(params, selected)

    def matvec(v):
        def one(b):
            return hvp(lambda x: loss_fn(merge(x), *b), block, v)

        return microbatch_mean(one, args, microbatch_size)

    return matvec, block


@eager_cached(
    static_argnames=("selected", "k", "num_iters", "which", "microbatch_size", "precision")
)
def _block_eigenpairs(
    loss_fn, params, *args, selected, key, k=1, num_iters=40, which="LA", microbatch_size=None,
    precision="highest",
):  # fmt: skip
    with jax.default_matmul_precision(precision):
        matvec, block = block_operator(loss_fn, params, args, selected, microbatch_size)
        return eigsh(matvec, block, k=k, num_iters=num_iters, key=key, which=which)


@eager_cached(static_argnames=("selected", "num_probes", "method", "microbatch_size", "precision"))
def _block_trace(
    loss_fn, params, *args, selected, key, num_probes=30, method="hutch++", microbatch_size=None,
    precision="highest",
):  # fmt: skip
    trace_estimator = estimator(method)
    with jax.default_matmul_precision(precision):
        matvec, block = block_operator(loss_fn, params, args, selected, microbatch_size)
        return trace_estimator(matvec, block, key, num_probes)


_DENSITY_STATIC = ("selected", "num_probes", "num_iters", "num_points", "microbatch_size")


@eager_cached(static_argnames=(*_DENSITY_STATIC, "precision"))
def _block_density(
    loss_fn, params, *args, selected, key, microbatch_size=None, precision="highest", **options
):
    with jax.default_matmul_precision(precision):
        matvec, block = block_operator(loss_fn, params, args, selected, microbatch_size)
        return slq(matvec, block, key=key, **options)


def block_top_eigenpairs(
    loss_fn: Callable[..., jax.Array],
    params: PyTree,
    *args,
    block: Block,
    key: jax.Array,
    **options,
) -> Eigenpairs:
    """Top-k eigenpairs of the Hessian block of ``block``.

    ``options``: ``k=1``, ``num_iters=40``, ``which="LA"``, ``microbatch_size=None``,
    ``precision="highest"``, as in :func:`dynamics.curvature.top_eigenpairs`. The eigenvectors
    are lists of the block's leaves (``jax.tree.leaves`` order), each with a leading axis k.
    """
    selected = block_leaves(params, block)
    return _block_eigenpairs(loss_fn, params, *args, selected=selected, key=key, **options)


def block_hessian_trace(
    loss_fn: Callable[..., jax.Array],
    params: PyTree,
    *args,
    block: Block,
    key: jax.Array,
    **options,
) -> TraceEstimate:
    """tr(H_bb) of the block's Hessian; ``options``: ``num_probes=30``, ``method="hutch++"``,
    ``microbatch_size``, ``precision``, as in :func:`dynamics.curvature.hessian_trace`."""
    selected = block_leaves(params, block)
    return _block_trace(loss_fn, params, *args, selected=selected, key=key, **options)


def block_spectral_density(
    loss_fn: Callable[..., jax.Array],
    params: PyTree,
    *args,
    block: Block,
    key: jax.Array,
    **options,
) -> SpectralDensity:
    """SLQ density of the block's Hessian, normalized by the block's dimension; ``options``:
    ``num_probes``, ``num_iters``, ``num_points``, ``sigma``, ``grid``, ``microbatch_size``,
    ``precision``, as in :func:`dynamics.curvature.spectral_density`."""
    selected = block_leaves(params, block)
    return _block_density(loss_fn, params, *args, selected=selected, key=key, **options)


def layer_sharpness(
    loss_fn: Callable[..., jax.Array],
    params: PyTree,
    *args,
    blocks: Mapping[str, Block] | None = None,
    num_iters: int = 30,
    key: jax.Array,
    microbatch_size: int | None = None,
    precision: str | None = "highest",
) -> dict[str, jax.Array]:
    """``{name: lambda_max(H_bb)}`` for every block (default: :func:`layer_blocks`)."""
    blocks = layer_blocks(params) if blocks is None else blocks
    keys = jax.random.split(key, len(blocks))
    return {
        name: block_top_eigenpairs(
            loss_fn,
            params,
            *args,
            block=block,
            k=1,
            num_iters=num_iters,
            key=k,
            microbatch_size=microbatch_size,
            precision=precision,
        ).eigenvalues[0]
        for (name, block), k in zip(blocks.items(), keys, strict=True)
    }


def block_size(params: PyTree, block: Block) -> int:
    """The number of parameters in the block."""
    sel = block_leaves(params, block)
    return sum(int(jnp.size(x)) for x, s in zip(jax.tree.leaves(params), sel, strict=True) if s)
