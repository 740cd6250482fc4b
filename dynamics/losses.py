"""Per-example losses, accuracy and the softmax-collapse indicator.

Every constructor is registered in ``LOSSES`` as ``fn(**kwargs) -> per_example_loss(outputs, y)``
returning ``[batch]``; the training loss is the mean over the batch. ``outputs`` are the model's
``[batch, K]``; ``y`` holds int class indices ``[batch]`` or float targets ``[batch, K]``.

* ``mse``: ``1/2 sum_k (f_k - t_k)^2`` per example, with ``t = onehot(y)`` for class labels and
  ``t = y`` for float targets. The factor 1/2 is Cohen et al. 2021's convention (their edge of
  stability uses ``0.5 * sum over classes of (f - onehot)^2``, mean over examples): with it the
  Gauss-Newton part of the Hessian is ``J^T J / n`` and GD on a quadratic diverges at sharpness
  ``2 / lr``. Without the 1/2 every Hessian eigenvalue doubles.
* ``cross_entropy``: ``logsumexp(z) - z_y`` in the outputs' dtype.
* ``stablemax_cross_entropy``: ``-log p_y`` (``log p`` is :func:`log_stablemax`) with
  ``p_i = s(z_i) / sum_j s(z_j)``, ``s(z) = z + 1`` for ``z >= 0`` and ``1 / (1 - z)`` for
  ``z < 0`` (Prieto et al. 2025, "Grokking at the edge of numerical stability"). Like their
  reference it is computed in float64 (``dtype="float64"``) -- which JAX honours only when x64
  is enabled (``jax.enable_x64``); otherwise it silently runs in float32. The result is cast
  back to the outputs' dtype.

Example:
  >>> loss = LOSSES.build("mse", {})
  >>> loss(jnp.array([[1.0, 0.0]]), jnp.array([0]))
  Array([0.], dtype=float32)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dynamics.registry import ConfigError, Registry

LOSSES: Registry = Registry("loss")


def _targets(outputs: jax.Array, y: jax.Array) -> jax.Array:
    if jnp.issubdtype(y.dtype, jnp.integer):
        return jax.nn.one_hot(y, outputs.shape[-1], dtype=outputs.dtype)
    return y.reshape(outputs.shape).astype(outputs.dtype)


def _class_labels(y: jax.Array, loss: str) -> jax.Array:
    if not jnp.issubdtype(y.dtype, jnp.integer) or y.ndim != 1:
        raise ConfigError(
            f"loss {loss!r} needs integer class labels [batch]; got {y.dtype} targets of shape "
            f"{tuple(y.shape)} (use loss 'mse' for regression)"
        )
    return y[:, None].astype(jnp.int32)


@LOSSES.register("mse")
def mse():
    """``1/2 sum_k (f_k - t_k)^2`` per example (see the module doc for the 1/2)."""

    def per_example_loss(outputs, y):
        diff = outputs - _targets(outputs, y)
        return 0.5 * jnp.sum(diff.reshape((diff.shape[0], -1)) ** 2, axis=-1)

    return per_example_loss


@LOSSES.register("cross_entropy")
def cross_entropy():
    """Softmax cross-entropy ``logsumexp(z) - z_y`` with integer labels."""

    def per_example_loss(outputs, y):
        picked = jnp.take_along_axis(outputs, _class_labels(y, "cross_entropy"), axis=-1)[:, 0]
        return jax.nn.logsumexp(outputs, axis=-1) - picked

    return per_example_loss


def stablemax_s(z: jax.Array) -> jax.Array:
    """``s(z) = z + 1`` for ``z >= 0``, ``1 / (1 - z)`` for ``z < 0``: positive, C^1 at 0."""
    # The inner where keeps both branches finite, so the gradient of the unused one is not NaN.
    return jnp.where(z >= 0, z + 1.0, 1.0 / (1.0 - jnp.where(z >= 0, 0.0, z)))


def log_stablemax(z: jax.Array, axis: int = -1) -> jax.Array:
    """``log p_i = log s(z_i) - log sum_j s(z_j)``, the StableMax log-probabilities (Prieto et
    al. 2025's ``log_stablemax``), in ``z``'s dtype.

    Example:
      >>> import jax.numpy as jnp
      >>> p = jnp.exp(log_stablemax(jnp.array([0.0, 1.0, -1.0])))
      >>> [round(float(x), 4) for x in p]
      [0.2857, 0.5714, 0.1429]
    """
    s = stablemax_s(z)
    return jnp.log(s) - jnp.log(jnp.sum(s, axis=axis, keepdims=True))


@LOSSES.register("stablemax_cross_entropy")
def stablemax_cross_entropy(dtype: str = "float64"):
    """StableMax cross-entropy ``log sum_j s(z_j) - log s(z_y)`` (see the module doc)."""
    if dtype not in ("float64", "float32"):
        raise ConfigError(f"unknown loss.dtype {dtype!r}; valid choices: float32, float64")

    def per_example_loss(outputs, y):
        # canonicalize_dtype maps float64 to float32 unless x64 is on (also inside enable_x64).
        z = outputs.astype(jax.dtypes.canonicalize_dtype(jnp.dtype(dtype)))
        labels = _class_labels(y, "stablemax_cross_entropy")
        picked = jnp.take_along_axis(log_stablemax(z), labels, axis=-1)[:, 0]
        return (-picked).astype(outputs.dtype)

    return per_example_loss


def accuracy(outputs: jax.Array, y: jax.Array) -> jax.Array:
    """Per-example ``1.0`` where ``argmax_k f_k == y`` (integer labels), else ``0.0``."""
    return (jnp.argmax(outputs, axis=-1) == y).astype(jnp.float32)


def softmax_collapse(outputs: jax.Array) -> jax.Array:
    """Per-example softmax collapse: ``sum_j exp(z_j - max z) == 1`` in the outputs' precision.

    When it holds, the softmax rounds to exactly one-hot and a correctly classified example gives
    exactly zero loss and gradient (Prieto et al. 2025); its batch mean is their SC fraction.
    """
    z = outputs - jnp.max(outputs, axis=-1, keepdims=True)
    return jnp.sum(jnp.exp(z), axis=-1) == 1.0
