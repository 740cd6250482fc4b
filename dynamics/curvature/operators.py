"""Curvature operators of the mean loss over a whole dataset, accumulated over microbatches.

The Hessian of L(w) = (1/n) sum_i l_i(w) is the example-weighted mean of the microbatch Hessians:
H v = sum_b (n_b / n) H_b v. ``lax.scan`` walks the microbatches, so the memory is that of one
microbatch HVP, whatever ``n`` (the 5,000-example Hessian of Cohen et al. 2021 on one device). A
dataset whose size is not a multiple of the microbatch size is split into full microbatches plus
one remainder chunk, so every example counts exactly once.

The dataset is an argument: ``dataset_operator(...)`` is called *inside* a jitted function that
receives the data, and the returned ``matvec`` closes over traced values only.

Example:
  >>> import jax, jax.numpy as jnp
  >>> loss = lambda w, b: jnp.mean((b["x"] @ w - b["y"]) ** 2)
  >>> data = {"x": jnp.eye(4), "y": jnp.zeros(4)}
  >>> matvec = dataset_operator(loss, jnp.zeros(4), data, microbatch_size=2)
  >>> matvec(jnp.ones(4))  # H = (2/4) I
  Array([0.5, 0.5, 0.5, 0.5], dtype=float32)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from dynamics.curvature.hvp import gnvp, hvp

PyTree = Any


def num_examples(data: PyTree) -> int:
    return jax.tree.leaves(data)[0].shape[0]


def take(data: PyTree, n: int) -> PyTree:
    """The first ``n`` examples of a dataset (a pytree of arrays with a leading example axis)."""
    return jax.tree.map(lambda a: a[:n], data)


def microbatch_mean(
    fn: Callable[[PyTree], PyTree], data: PyTree, microbatch_size: int | None
) -> PyTree:
    """sum_b (n_b / n) fn(batch_b): the example-weighted mean of ``fn`` over microbatches.

    ``fn(batch)`` returns a pytree of arrays (a vector, a scalar loss); with ``microbatch_size``
    None or >= n it is evaluated once on the whole dataset.
    """
    n = num_examples(data)
    if microbatch_size is None or microbatch_size >= n:
        return fn(data)
    num_full, rest = divmod(n, microbatch_size)
    full = jax.tree.map(
        lambda a: a[: num_full * microbatch_size].reshape(num_full, microbatch_size, *a.shape[1:]),
        data,
    )

    def body(acc, batch):
        return jax.tree.map(jnp.add, acc, fn(batch)), None

    first = jax.tree.map(lambda a: a[0], full)
    init = jax.tree.map(jnp.zeros_like, jax.eval_shape(fn, first))
    total, _ = jax.lax.scan(body, init, full)
    total = jax.tree.map(lambda t: t * (microbatch_size / n), total)
    if rest:
        tail = jax.tree.map(lambda a: a[num_full * microbatch_size :], data)
        total = jax.tree.map(lambda t, r: t + r * (rest / n), total, fn(tail))
    return total


def dataset_operator(
    loss_fn: Callable[..., jax.Array],
    params: PyTree,
    data: PyTree,
    microbatch_size: int | None = None,
) -> Callable[[PyTree], PyTree]:
    """v -> H v for the Hessian of the mean of ``loss_fn(params, batch)`` over ``data``.

    ``loss_fn(params, batch)`` must be the *mean* loss over ``batch``.
    """
    return lambda v: microbatch_mean(lambda b: hvp(loss_fn, params, v, b), data, microbatch_size)


def dataset_gauss_newton_operator(
    apply_fn: Callable[..., Any],
    per_example_loss: Callable[..., jax.Array],
    params: PyTree,
    data: dict,
    microbatch_size: int | None = None,
) -> Callable[[PyTree], PyTree]:
    """v -> G v for the Gauss-Newton matrix of the mean loss over ``data`` (see ``gnvp``)."""
    return lambda v: microbatch_mean(
        lambda b: gnvp(apply_fn, per_example_loss, params, v, b), data, microbatch_size
    )


def dataset_loss_and_grad(
    loss_fn: Callable[..., jax.Array],
    params: PyTree,
    data: PyTree,
    microbatch_size: int | None = None,
) -> tuple[jax.Array, PyTree]:
    """The mean loss over ``data`` and its gradient, accumulated over microbatches."""
    return microbatch_mean(lambda b: jax.value_and_grad(loss_fn)(params, b), data, microbatch_size)
