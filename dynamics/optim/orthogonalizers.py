r"""Orthogonalizers: maps ``X = U S V^T -> ~ U V^T`` used by Muon-family update rules.

Every orthogonalizer is a pure function ``(x, **options) -> array`` of the same shape and dtype
as ``x``, batched over all leading axes (``x[..., m, n]``). Update rules take one as
``orthogonalizer=`` so that a sharded or kernel version can be dropped in without touching the
momentum logic.

Newton-Schulz (quintic). With ``X_0 = x / (s ||x||_F + eps)`` (``s`` a safety factor >= 1, so that
every singular value of ``X_0`` lies in (0, 1]) each step applies the odd polynomial

    X <- a X + b (X X^T) X + c (X X^T)^2 X,

i.e. ``sigma <- p(sigma) = a sigma + b sigma^3 + c sigma^5`` to every singular value while keeping
the singular vectors. The Gram matrix is formed on the smaller side (``x`` is transposed when
``m > n``), so a step costs ``2 m n k + 2 k^3`` multiply-adds with ``k = min(m, n)``.

Coefficient presets (``NS_PRESETS``):

* ``"muon"``: Jordan et al. (2024) ``(3.4445, -4.7750, 2.0315)`` repeated; after 5 steps the
  singular values lie roughly in [0.7, 1.2] (the iteration trades exactness for slope at 0).
* ``"polar_express"``: Amsel, Persson, Musco, Gower (2025), "The Polar Express: Optimal Matrix
  Sign Methods and Their Application to the Muon Algorithm", arXiv:2505.16932. Eight
  per-iteration minimax-optimal quintics for ``l_0 = 1e-3`` starting ``(8.2872, -23.5959,
  17.3004)`` and converging to ``(1.875, -1.25, 0.375)`` (the Newton-Schulz quintic, which is
  repeated beyond eight steps). As in the reference code, all but the last are divided by a
  safety factor ``(a/1.01, b/1.01^3, c/1.01^5)`` and the input is normalized by
  ``1.01 ||x||_F + 1e-7``.
* ``"polar_express_speedrun"``: the 5-step list used by the modded-nanogpt speedrun
  (``(8.1566, -22.4833, 15.8788)`` first, safety 2% folded into the coefficients), with input
  normalized by ``1.02 ||x||_F + 1e-6`` as there.

A user can also pass an array of shape ``(3,)`` (one quintic repeated) or ``(k, 3)`` (one per
step; the last row repeats when ``steps > k``).

Example:
  >>> import jax, jax.numpy as jnp
  >>> x = jax.random.normal(jax.random.key(0), (64, 32))
  >>> o = polar_express(x, steps=8)
  >>> s = jnp.linalg.svd(o, compute_uv=False)
  >>> bool(jnp.all(jnp.abs(s - 1) < 0.02))
  True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dynamics.optim.common import accumulation_dtype

Orthogonalizer = Callable[[jax.Array], jax.Array]

_MUON = ((3.4445, -4.7750, 2.0315),)

_POLAR_EXPRESS_RAW = (
    (8.28721201814563, -23.595886519098837, 17.300387312530933),
    (4.107059111542203, -2.9478499167379106, 0.5448431082926601),
    (3.9486908534822946, -2.908902115962949, 0.5518191394370137),
    (3.3184196573706015, -2.488488024314874, 0.51004894012372),
    (2.300652019954817, -1.6689039845747493, 0.4188073119525673),
    (1.891301407787398, -1.2679958271945868, 0.37680408948524835),
    (1.8750014808534479, -1.2500016453999487, 0.3750001645474248),
    (1.875, -1.25, 0.375),
)
_PE_SAFETY = 1.01
# The safety factor keeps singular values that round above 1 in bf16 from being amplified; the
# last polynomial has a fixed point at 1 and is left unchanged.
_POLAR_EXPRESS = tuple(
    (a / _PE_SAFETY, b / _PE_SAFETY**3, c / _PE_SAFETY**5) for a, b, c in _POLAR_EXPRESS_RAW[:-1]
) + (_POLAR_EXPRESS_RAW[-1],)

_POLAR_EXPRESS_SPEEDRUN = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)

# name -> (coefficient rows, input normalization safety factor s, eps)
NS_PRESETS: dict[str, tuple[tuple[tuple[float, float, float], ...], float, float]] = {
    "muon": (_MUON, 1.0, 1e-7),
    "polar_express": (_POLAR_EXPRESS, _PE_SAFETY, 1e-7),
    "polar_express_speedrun": (_POLAR_EXPRESS_SPEEDRUN, 1.02, 1e-6),
}


def coefficient_schedule(coeffs: Any, steps: int) -> np.ndarray:
    """Returns the ``(steps, 3)`` float64 table of quintic coefficients used by each step.

    Args:
      coeffs: a preset name from ``NS_PRESETS``, a ``(3,)`` triple or a ``(k, 3)`` table.
      steps: the number of iterations; the last row is repeated past the end of the table.
    """
    if isinstance(coeffs, str):
        if coeffs not in NS_PRESETS:
            raise ValueError(
                f"unknown coefficient preset {coeffs!r}; choices: {sorted(NS_PRESETS)}"
            )
        coeffs = NS_PRESETS[coeffs][0]
    table = np.asarray(coeffs, dtype=np.float64).reshape(-1, 3)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    rows = np.minimum(np.arange(steps), len(table) - 1)
    return table[rows]


def default_compute_dtype(input_dtype: Any = jnp.float32) -> jnp.dtype:
    """The matrix-product dtype used when none is given, never below the input's on CPU.

    bfloat16 on GPU/TPU for inputs of at most 32 bits (the tensor-core rate; Jordan et al.'s
    Muon runs its Newton-Schulz in bf16); otherwise, and always on CPU (which has no fast bf16
    matmul), the input's dtype promoted to at least float32, so a float64 run stays float64.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> str(default_compute_dtype(jnp.float64)) if jax.default_backend() == "cpu" else "float64"
      'float64'
    """
    input_dtype = jnp.dtype(input_dtype)
    if jax.default_backend() in ("gpu", "tpu") and input_dtype.itemsize <= 4:
        return jnp.dtype(jnp.bfloat16)
    return jnp.dtype(accumulation_dtype(input_dtype))


def newton_schulz(
    x: jax.Array,
    *,
    coeffs: Any = "muon",
    steps: int = 5,
    eps: float | None = None,
    safety: float | None = None,
    dtype: Any = None,
) -> jax.Array:
    r"""Approximate polar factor ``U V^T`` of ``x[..., m, n]`` by quintic Newton-Schulz.

    ``X_0 = x / (safety ||x||_F + eps)``; ``X_{k+1} = a_k X_k + (b_k A_k + c_k A_k^2) X_k`` with
    ``A_k = X_k X_k^T`` formed on the smaller side. See the module docstring for the presets.

    Args:
      x: array with at least 2 axes; leading axes are a batch of independent matrices.
      coeffs: preset name (``"muon"``, ``"polar_express"``, ``"polar_express_speedrun"``), a
        ``(3,)`` triple or a ``(k, 3)`` per-step table.
      steps: number of iterations.
      eps: added to the Frobenius norm; defaults to the preset's value (1e-7 for arrays).
      safety: factor multiplying the Frobenius norm; defaults to the preset's value (1 for arrays).
      dtype: dtype of the matrix-product operands; None picks ``default_compute_dtype(x.dtype)``
        (bf16 on accelerators for inputs up to float32; on CPU at least float32 and never below
        the input's dtype). The products accumulate, and the coefficients are
        applied, in at least float32; the result is cast back to ``x.dtype``.

    Returns:
      An array like ``x`` whose singular values lie in the band the coefficients promise.

    Example:
      >>> import jax
      >>> o = newton_schulz(jax.random.normal(jax.random.key(0), (8, 16, 32)))
      >>> o.shape
      (8, 16, 32)
    """
    if x.ndim < 2:
        raise ValueError(f"newton_schulz needs a matrix (ndim >= 2), got shape {x.shape}")
    preset = NS_PRESETS.get(coeffs) if isinstance(coeffs, str) else None
    eps = (preset[2] if preset else 1e-7) if eps is None else eps
    safety = (preset[1] if preset else 1.0) if safety is None else safety
    table = coefficient_schedule(coeffs, steps)
    dtype = default_compute_dtype(x.dtype) if dtype is None else jnp.dtype(dtype)

    out_dtype = x.dtype
    transpose = x.shape[-2] > x.shape[-1]
    if transpose:
        x = jnp.swapaxes(x, -1, -2)
    # Only the matrix products run in ``dtype``; the norm, the coefficients and the linear
    # combinations are kept in at least float32. In bf16, Muon's (3.4445, -4.7750, 2.0315) would
    # otherwise round to (3.4375, -4.78125, 2.03125), a different polynomial. The products return
    # float32 (``preferred_element_type``, the accumulator precision of bf16 tensor cores), so
    # each step rounds to ``dtype`` once per matrix that feeds the next product.
    acc = accumulation_dtype(dtype)
    x32 = x.astype(acc)
    norm = jnp.sqrt(jnp.sum(jnp.square(x32), axis=(-2, -1), keepdims=True))
    X = (x32 / (safety * norm + eps)).astype(dtype)

    def matmul(p, q):
        return jnp.matmul(p, q, preferred_element_type=acc)

    def step(X, abc):
        a, b, c = abc[0], abc[1], abc[2]
        A = matmul(X, jnp.swapaxes(X, -1, -2))
        A_low = A.astype(dtype)
        B = b * A + c * matmul(A_low, A_low)
        return (a * X.astype(acc) + matmul(B.astype(dtype), X)).astype(dtype), None

    X, _ = jax.lax.scan(step, X, jnp.asarray(table, dtype=acc))
    if transpose:
        X = jnp.swapaxes(X, -1, -2)
    return X.astype(out_dtype)


def polar_express(
    x: jax.Array, *, steps: int = 8, dtype: Any = None, coeffs: Any = "polar_express"
) -> jax.Array:
    """Polar Express (Amsel et al. 2025): Newton-Schulz with per-step minimax coefficients.

    Same as ``newton_schulz(x, coeffs="polar_express", steps=steps)``; with ``steps >= 8`` the
    iteration converges to the exact polar factor (the tail quintic ``(15 - 10 s^2 + 3 s^4) s / 8``
    has a superlinear fixed point at 1). ``coeffs="polar_express_speedrun"`` selects the 5-step
    list of the NanoGPT speedrun.

    Example:
      >>> import jax
      >>> o = polar_express(jax.random.normal(jax.random.key(1), (32, 16)), steps=10)
      >>> o.shape
      (32, 16)
    """
    return newton_schulz(x, coeffs=coeffs, steps=steps, dtype=dtype)


def svd_polar(x: jax.Array) -> jax.Array:
    """Exact polar factor ``U V^T`` from a thin SVD, batched; for tests and small matrices.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> o = svd_polar(jax.random.normal(jax.random.key(0), (6, 4)))
      >>> bool(jnp.allclose(o.T @ o, jnp.eye(4), atol=1e-5))
      True
    """
    u, _, vt = jnp.linalg.svd(x.astype(accumulation_dtype(x.dtype)), full_matrices=False)
    return (u @ vt).astype(x.dtype)


ORTHOGONALIZERS: dict[str, Orthogonalizer] = {
    "newton_schulz": newton_schulz,
    "polar_express": polar_express,
    "svd": svd_polar,
}


def resolve_orthogonalizer(
    orthogonalizer: str | Orthogonalizer | None,
    *,
    coeffs: Any = "muon",
    steps: int = 5,
    eps: float | None = None,
    dtype: Any = None,
) -> Orthogonalizer:
    """Turns the ``orthogonalizer=`` option of an update rule into a function of ``x`` alone.

    ``None`` or ``"newton_schulz"`` binds ``coeffs``, ``steps``, ``eps`` and ``dtype`` to
    :func:`newton_schulz`; ``"polar_express"`` binds ``steps`` and ``dtype``; ``"svd"`` is the
    exact polar factor; a callable is used as is.
    """
    if callable(orthogonalizer):
        return orthogonalizer
    if orthogonalizer in (None, "newton_schulz"):
        return lambda x: newton_schulz(x, coeffs=coeffs, steps=steps, eps=eps, dtype=dtype)
    if orthogonalizer == "polar_express":
        return lambda x: polar_express(x, steps=steps, dtype=dtype)
    if orthogonalizer == "svd":
        return svd_polar
    raise ValueError(
        f"unknown orthogonalizer {orthogonalizer!r}; "
        f"choices: {sorted(ORTHOGONALIZERS)} or a callable"
    )
