"""Minibatches as a pure, jittable function of ``(key, step)``.

The data order is not an iterator with hidden state: batch ``step`` is

    epoch = step // steps_per_epoch,   i = step % steps_per_epoch
    perm  = random.permutation(fold_in(key, epoch), num_examples)
    batch = perm[i * batch_size : (i + 1) * batch_size]

with ``steps_per_epoch = num_examples // batch_size`` (the last ``num_examples % batch_size``
examples of each permutation are dropped, so every batch has the same shape and the step compiles
once). Each epoch visits every kept example exactly once, in a fresh order. Because the batch
depends only on ``(key, step)``, the step counter *is* the iterator position: a run restored from a
checkpoint at step ``t`` sees exactly the batches an uninterrupted run sees, with nothing else to
save. ``batch_size`` None, 0 or ``>= num_examples`` means full batch (every step returns
``arange(num_examples)``).

Example:
  >>> import numpy as np
  >>> train = {"x": np.zeros((100, 3), np.float32), "y": np.arange(100)}
  >>> idx = jax.jit(batch_indices, static_argnums=(2, 3))(jax.random.key(0), 7, 100, 32)
  >>> get_batch(train, idx)["x"].shape
  (32, 3)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """Steps in one pass over the data (1 for full batch)."""
    if not batch_size or batch_size >= num_examples:
        return 1
    return num_examples // batch_size


def batch_indices(key: jax.Array, step, num_examples: int, batch_size: int) -> jax.Array:
    """Indices ``[batch_size]`` (int32) of minibatch ``step``; see the module doc.

    Args:
      key: a PRNG key reserved for the data order.
      step: the iterator position (int or traced int scalar).
      num_examples: size of the dataset (static).
      batch_size: examples per batch (static); None, 0 or ``>= num_examples`` is full batch.
    """
    if not batch_size or batch_size >= num_examples:
        return jnp.arange(num_examples, dtype=jnp.int32)
    per_epoch = num_examples // batch_size
    step = jnp.asarray(step, jnp.int32)
    perm = jax.random.permutation(jax.random.fold_in(key, step // per_epoch), num_examples)
    start = (step % per_epoch) * batch_size
    return jax.lax.dynamic_slice_in_dim(perm, start, batch_size).astype(jnp.int32)


def get_batch(data, indices):
    """Gathers ``indices`` along the example axis of every array in ``data``."""
    return jax.tree.map(lambda a: jnp.take(a, indices, axis=0), data)
