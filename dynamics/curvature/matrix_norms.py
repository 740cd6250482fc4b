"""Spectral diagnostics of weight matrices and their updates (the spectral condition).

Yang, Simon & Bernstein (2023, "A Spectral Condition for Feature Learning") show that feature
learning at every width needs each weight matrix W_l and each update dW_l to have spectral norm
of order sqrt(fan_out / fan_in):

    ||W_l||_2 = Theta(sqrt(n_l / n_{l-1})),   ||dW_l||_2 = Theta(sqrt(n_l / n_{l-1})),

the square root included. Orthogonalized updates (Muon) make dW's singular values equal and
whitened ones (SOAP, Shampoo) flatten them, so the spectral norm of the update and its ranks are
what tell these rules apart from AdamW.

* ``||W||_2`` by power iteration on W^T W, warm-started from the previous right singular vector
  (one vector per matrix; a few products per probe track a slowly moving W);
* stable rank ||W||_F^2 / ||W||_2^2 (Rudelson & Vershynin 2007), in [1, rank];
* effective rank exp(H(p)), p_i = sigma_i / sum_j sigma_j, H the Shannon entropy (Roy & Vetterli
  2007), from the singular values (an SVD of the matrix, small for layer weights).

Matrices are the parameter leaves with two or more axes, read in Flax's layout ``(..., in,
out)``: a kernel of shape ``(k1, ..., in, out)`` is the ``(k1 ... in) x out`` matrix, so
``fan_in = prod(shape[:-1])`` and ``fan_out = shape[-1]``.

Example:
  >>> import jax, jax.numpy as jnp
  >>> w = jnp.diag(jnp.array([3.0, 1.0]))
  >>> sigma, _ = spectral_norm(w, jnp.ones(2), num_iters=30)
  >>> round(float(sigma), 4), round(float(stable_rank(w, sigma)), 4)
  (3.0, 1.1111)
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from dynamics.curvature.blocks import leaf_paths

PyTree = Any


def as_matrix(w: jax.Array) -> jax.Array:
    """A kernel ``(..., in, out)`` as the ``fan_in x fan_out`` matrix."""
    return w.reshape(-1, w.shape[-1])


def matrix_names(params: PyTree) -> list[tuple[int, str]]:
    """``(leaf index, name)`` of every leaf with >= 2 axes; a trailing ``/kernel`` is dropped
    from the path, so a Dense layer's kernel is named after its layer (``"Dense_0"``)."""
    out = []
    for i, (path, leaf) in enumerate(zip(leaf_paths(params), jax.tree.leaves(params), strict=True)):
        if jnp.ndim(leaf) >= 2:
            out.append((i, path.removesuffix("/kernel")))
    return out


def spectral_target(w: jax.Array) -> float:
    """sqrt(fan_out / fan_in) for a kernel in ``(..., in, out)`` layout."""
    fan_in = math.prod(w.shape[:-1])
    return math.sqrt(w.shape[-1] / fan_in)


def spectral_norm(w: jax.Array, v0: jax.Array, num_iters: int) -> tuple[jax.Array, jax.Array]:
    """``(||W||_2, v)``: ``num_iters`` steps of v <- W^T W v / ||W^T W v|| from ``v0``.

    Returns ||W v|| (a lower bound that converges to sigma_max) and the unit vector v, the warm
    start of the next call. A zero ``v0`` or a zero W gives 0 and a fixed unit vector.
    """
    m = as_matrix(w)
    fallback = jnp.ones_like(v0) / jnp.sqrt(v0.size)

    def unit(v):
        n = jnp.linalg.norm(v)
        return jnp.where(n > 0, v / jnp.where(n > 0, n, 1.0), fallback)

    def body(v, _):
        return unit(m.T @ (m @ v)), None

    v, _ = jax.lax.scan(body, unit(v0), None, length=num_iters)
    return jnp.linalg.norm(m @ v), v


def stable_rank(w: jax.Array, sigma: jax.Array) -> jax.Array:
    """||W||_F^2 / sigma^2 for a given spectral norm ``sigma`` (0 for a zero matrix)."""
    fro2 = jnp.sum(jnp.square(w))
    return jnp.where(sigma > 0, fro2 / jnp.where(sigma > 0, sigma, 1.0) ** 2, 0.0)


def effective_rank(w: jax.Array) -> jax.Array:
    """exp of the entropy of the normalized singular values (Roy & Vetterli 2007)."""
    s = jnp.linalg.svd(as_matrix(w), compute_uv=False)
    total = jnp.sum(s)
    p = s / jnp.where(total > 0, total, 1.0)
    entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
    return jnp.where(total > 0, jnp.exp(entropy), 0.0)
