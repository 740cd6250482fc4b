r"""Muon-family update rules: momentum, then an orthogonalized (or normalized) matrix step.

Every rule here is ``scale_by_<name>(...)`` (matrix leaves only) plus an alias
``<name>(learning_rate, ...)`` that chains ``scale_by_<name> -> add_decayed_weights ->
scale_by_learning_rate`` on matrices and sends every other leaf to AdamW
(:mod:`dynamics.optim.partition` documents the labelling and the matrix view of conv kernels and
stacked layers). Shape factors assume the Flax ``(in, out)`` layout (``layout="in_out"``: fan-in
is the product of all non-batch axes but the last, fan-out is the last axis); pass
``layout="out_in"`` for PyTorch ``(out, in)`` weights.

Common momentum (Jordan et al. 2024): ``m <- b m + (1 - b) g``; the direction fed to the
orthogonalizer is ``u = (1 - b) g + b m`` (Nesterov) or ``u = m`` (heavy ball).
``bias_correction=True`` uses optax.contrib.muon's form
``u = b m / (1 - b^{t+1}) + (1 - b) g / (1 - b^t)``.

Shape scaling modes (``scaling=``), applied to the orthogonalized matrix ``O``:

* ``"shape"``: ``sqrt(max(1, fan_out / fan_in))`` (Keller Jordan's Muon);
* ``"consistent_rms"``, alias ``"spectral"``: ``rms sqrt(max(fan_in, fan_out))`` (Moonlight,
  Liu et al. 2025, "Muon is Scalable for LLM Training"; with ``rms = 0.2`` the update RMS
  matches AdamW's). ``"spectral"`` is the name issue 4 gives this mode; it is not the spectral
  condition's ``sqrt(fan_out / fan_in)``, which is ``"unit_rms"`` below;
* ``"unit_rms"``: ``sqrt(fan_out / fan_in)`` (the spectral condition of Yang, Simon & Bernstein
  2023: an orthogonal step with spectral norm ``sqrt(fan_out / fan_in)``);
* ``"none"``.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from dynamics.optim.orthogonalize import resolve_orthogonalizer
from dynamics.optim.partition import fan_in_out, matrix_optimizer, matrix_shape, to_matrices
from dynamics.optim.registry import OPTIMIZERS

SCALINGS = ("shape", "consistent_rms", "spectral", "unit_rms", "none")


def shape_factor(shape, *, scaling: str, rms: float = 0.2, batch_ndim: int = 0, layout="in_out"):
    """The scalar multiplying an orthogonalized update of a leaf of ``shape`` (see module doc)."""
    fan_in, fan_out = fan_in_out(shape, batch_ndim, layout)
    if scaling == "shape":
        return math.sqrt(max(1.0, fan_out / fan_in))
    if scaling in ("consistent_rms", "spectral"):
        return rms * math.sqrt(max(fan_in, fan_out))
    if scaling == "unit_rms":
        return math.sqrt(fan_out / fan_in)
    if scaling == "none":
        return 1.0
    raise ValueError(f"unknown scaling {scaling!r}; choices: {', '.join(SCALINGS)}")


def _momentum_direction(g, m, count, *, beta, nesterov, bias_correction):
    """Returns ``(new_m, u)``: the EMA momentum and the direction to orthogonalize."""
    m = (beta * m + (1 - beta) * g.astype(m.dtype)).astype(m.dtype)
    if not bias_correction:
        u = (1 - beta) * g + beta * m.astype(g.dtype) if nesterov else m.astype(g.dtype)
        return m, u
    t = count.astype(accum_dtype(g.dtype))
    m_hat = m.astype(g.dtype) / (1 - beta ** (t + 1)).astype(g.dtype)
    if nesterov:
        return m, (beta * m_hat + (1 - beta) * g / (1 - beta**t).astype(g.dtype))
    return m, m.astype(g.dtype) / (1 - beta**t).astype(g.dtype)


def accum_dtype(dtype):
    """Statistics and norms are kept in at least float32 (float64 stays float64)."""
    return jnp.promote_types(dtype, jnp.float32)


def _frobenius(x):
    """Per-matrix Frobenius norm of a ``(B, m, n)`` stack (at least float32), ``(B, 1, 1)``."""
    x = x.astype(accum_dtype(x.dtype))
    return jnp.sqrt(jnp.sum(x * x, axis=(-2, -1), keepdims=True))


def _check_scaling(scaling, layout):
    if scaling not in SCALINGS:
        raise ValueError(f"unknown scaling {scaling!r}; choices: {', '.join(SCALINGS)}")
    if layout not in ("in_out", "out_in"):
        raise ValueError(f"unknown layout {layout!r}; choices: in_out, out_in")


# --------------------------------------------------------------------------------------- Muon
class MuonState(NamedTuple):
    """State of the momentum-only rules: :func:`scale_by_muon`, :func:`scale_by_auon` and
    :func:`dynamics.optim.scion.scale_by_scion`.

    Attributes:
      count: number of updates so far (int32 scalar).
      mu: the momentum ``m``, one array per leaf, dtype ``mu_dtype`` or the leaf's.
    """

    count: chex.Array
    mu: optax.Updates


def _init_momentum(params, mu_dtype):
    return jax.tree.map(lambda p: jnp.zeros_like(p, dtype=mu_dtype or p.dtype), params)


def scale_by_muon(
    *,
    beta: float = 0.95,
    nesterov: bool = True,
    bias_correction: bool = False,
    ns_coeffs: Any = "muon",
    ns_steps: int = 5,
    eps: float | None = None,
    orthogonalizer: Any = None,
    compute_dtype: Any = None,
    scaling: str = "shape",
    rms: float = 0.2,
    layout: str = "in_out",
    batch_ndim: int = 0,
    mu_dtype: Any = None,
) -> optax.GradientTransformation:
    r"""Muon (Jordan et al. 2024, "Muon: An optimizer for hidden layers in neural networks").

    .. math::
        m_t = b m_{t-1} + (1 - b) g_t,\quad u_t = (1 - b) g_t + b m_t \ (\text{or } m_t),\quad
        \Delta_t = s(\text{shape})\, \mathrm{orth}(u_t)

    ``orth`` is ``orthogonalizer`` (default quintic Newton-Schulz with ``ns_coeffs`` for
    ``ns_steps`` steps, see :mod:`dynamics.optim.orthogonalize`), applied to the matrix view of
    every leaf. Every leaf must be a matrix (``ndim >= 2 + batch_ndim``): use :func:`muon` for
    trees with biases.

    Args:
      beta: momentum decay ``b``.
      nesterov: Nesterov direction (default) or heavy ball ``u = m``.
      bias_correction: optax.contrib.muon's bias-corrected Nesterov direction.
      ns_coeffs: coefficient preset / table of the default Newton-Schulz orthogonalizer.
      ns_steps: number of orthogonalizer steps.
      eps: added to the Frobenius norm before Newton-Schulz (preset default 1e-7).
      orthogonalizer: None, ``"newton_schulz"``, ``"polar_express"``, ``"svd"`` or a callable
        ``x[..., m, n] -> x``.
      compute_dtype: orthogonalizer dtype (None: bf16 on accelerators, float32 on CPU).
      scaling: ``"shape"``, ``"consistent_rms"`` (alias ``"spectral"``), ``"unit_rms"`` or
        ``"none"`` (module doc).
      rms: target RMS of the ``"consistent_rms"`` / ``"spectral"`` mode.
      layout: ``"in_out"`` (Flax) or ``"out_in"`` (PyTorch), for the shape factor.
      batch_ndim: leading axes of every leaf that index independent matrices.
      mu_dtype: momentum dtype (default: the leaf's).

    Example:
      >>> import jax.numpy as jnp, optax
      >>> tx = scale_by_muon()
      >>> params = {"w": jnp.ones((4, 8))}
      >>> u, _ = tx.update(params, tx.init(params))
      >>> u["w"].shape
      (4, 8)
    """
    _check_scaling(scaling, layout)
    orth = resolve_orthogonalizer(
        orthogonalizer, coeffs=ns_coeffs, steps=ns_steps, eps=eps, dtype=compute_dtype
    )

    def init_fn(params):
        return MuonState(count=jnp.zeros([], jnp.int32), mu=_init_momentum(params, mu_dtype))

    def update_fn(updates, state, params=None):
        del params
        count = optax.safe_increment(state.count)

        def leaf(g, m):
            m, u = _momentum_direction(
                g, m, count, beta=beta, nesterov=nesterov, bias_correction=bias_correction
            )
            o = orth(to_matrices(u, batch_ndim)).reshape(g.shape)
            s = shape_factor(
                g.shape, scaling=scaling, rms=rms, batch_ndim=batch_ndim, layout=layout
            )
            return (s * o).astype(g.dtype), m

        new_updates, mu = _split(updates, jax.tree.map(leaf, updates, state.mu), 2)
        return new_updates, MuonState(count=count, mu=mu)

    return optax.GradientTransformation(init_fn, update_fn)


def _split(updates, out, n):
    """Splits a tree of n-tuples (one per leaf of ``updates``) into n trees."""
    return jax.tree.transpose(jax.tree.structure(updates), jax.tree.structure((0,) * n), out)


def muon(
    learning_rate: optax.ScalarOrSchedule,
    *,
    beta: float = 0.95,
    nesterov: bool = True,
    bias_correction: bool = False,
    ns_coeffs: Any = "muon",
    ns_steps: int = 5,
    eps: float | None = None,
    orthogonalizer: Any = None,
    compute_dtype: Any = None,
    scaling: str = "shape",
    rms: float = 0.2,
    layout: str = "in_out",
    batch_ndim: int = 0,
    mu_dtype: Any = None,
    weight_decay: float = 0.0,
    labels: Any = None,
    adam_learning_rate: optax.ScalarOrSchedule | None = None,
    adam_b1: float = 0.9,
    adam_b2: float = 0.999,
    adam_eps: float = 1e-8,
    adam_weight_decay: float = 0.0,
) -> optax.GradientTransformationExtraArgs:
    """Muon on matrices, AdamW on the rest; see :func:`scale_by_muon`.

    Decoupled weight decay on matrices: ``p <- p - lr (Delta + weight_decay p)``. Reference
    defaults: ``learning_rate=0.02``, ``beta=0.95``, 5 Newton-Schulz steps.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> params = {"w": jnp.ones((4, 8)), "b": jnp.zeros(8)}
      >>> tx = muon(0.02)
      >>> u, _ = tx.update(params, tx.init(params), params)
      >>> sorted(u)
      ['b', 'w']
    """
    return matrix_optimizer(
        scale_by_muon(
            beta=beta,
            nesterov=nesterov,
            bias_correction=bias_correction,
            ns_coeffs=ns_coeffs,
            ns_steps=ns_steps,
            eps=eps,
            orthogonalizer=orthogonalizer,
            compute_dtype=compute_dtype,
            scaling=scaling,
            rms=rms,
            layout=layout,
            batch_ndim=batch_ndim,
            mu_dtype=mu_dtype,
        ),
        learning_rate,
        weight_decay=weight_decay,
        labels=labels,
        batch_ndim=batch_ndim,
        adam_learning_rate=adam_learning_rate,
        adam_b1=adam_b1,
        adam_b2=adam_b2,
        adam_eps=adam_eps,
        adam_weight_decay=adam_weight_decay,
    )


def _fallback_kwargs(kw):
    """The keyword arguments every alias forwards to :func:`matrix_optimizer`."""
    keys = (
        "weight_decay",
        "labels",
        "batch_ndim",
        "adam_learning_rate",
        "adam_b1",
        "adam_b2",
        "adam_eps",
        "adam_weight_decay",
    )
    return {k: kw[k] for k in keys}


# ------------------------------------------------------------------------------------ AdaMuon
class AdaMuonState(NamedTuple):
    """State of :func:`scale_by_adamuon`.

    Attributes:
      count: number of updates so far (int32 scalar).
      mu: the momentum ``m`` per leaf.
      nu: the element-wise second moment ``v`` of the orthogonalized direction, per leaf.
    """

    count: chex.Array
    mu: optax.Updates
    nu: optax.Updates


def scale_by_adamuon(
    *,
    beta: float = 0.95,
    b2: float = 0.999,
    eps: float = 1e-8,
    nesterov: bool = True,
    sign_stabilize: bool = False,
    rms: float = 0.2,
    ns_coeffs: Any = "muon",
    ns_steps: int = 5,
    orthogonalizer: Any = None,
    compute_dtype: Any = None,
    batch_ndim: int = 0,
    mu_dtype: Any = None,
) -> optax.GradientTransformation:
    r"""AdaMuon (Si et al. 2025, "AdaMuon: Adaptive Muon Optimizer", arXiv:2507.11005).

    .. math::
        O_t = \mathrm{orth}(u_t)\ (\text{or } \mathrm{orth}(\mathrm{sign}(u_t))),\quad
        v_t = b_2 v_{t-1} + (1 - b_2) O_t^2,\quad
        \hat O_t = O_t / (\sqrt{v_t / (1 - b_2^t)} + \epsilon),\quad
        \Delta_t = \hat O_t \cdot \mathrm{rms} \sqrt{m n} / \|\hat O_t\|_F

    with the Muon momentum direction ``u_t``. The final rescaling gives every matrix the update
    RMS ``rms`` (0.2, AdamW-matched), so no shape factor is applied; it is layout-free.
    ``sign_stabilize=True`` orthogonalizes ``sign(u_t)`` (the paper's sign-stabilized variant).

    Example:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_adamuon()
      >>> p = {"w": jnp.arange(32.0).reshape(4, 8)}
      >>> u, _ = tx.update(p, tx.init(p))
      >>> round(float(jnp.sqrt(jnp.mean(u["w"] ** 2))), 3)
      0.2
    """
    orth = resolve_orthogonalizer(
        orthogonalizer, coeffs=ns_coeffs, steps=ns_steps, dtype=compute_dtype
    )

    def init_fn(params):
        return AdaMuonState(
            count=jnp.zeros([], jnp.int32),
            mu=_init_momentum(params, mu_dtype),
            nu=jax.tree.map(lambda p: jnp.zeros_like(p, dtype=accum_dtype(p.dtype)), params),
        )

    def update_fn(updates, state, params=None):
        del params
        count = optax.safe_increment(state.count)

        def leaf(g, m, v):
            m, u = _momentum_direction(
                g, m, count, beta=beta, nesterov=nesterov, bias_correction=False
            )
            if sign_stabilize:
                u = jnp.sign(u)
            o = orth(to_matrices(u, batch_ndim)).astype(v.dtype)
            bc2 = 1 - b2 ** count.astype(v.dtype)
            v = b2 * v + (1 - b2) * jnp.square(o).reshape(v.shape)
            o = o / (jnp.sqrt(to_matrices(v, batch_ndim) / bc2) + eps)
            size = o.shape[-2] * o.shape[-1]
            o = o * (rms * math.sqrt(size)) / (_frobenius(o) + 1e-12)
            return o.reshape(g.shape).astype(g.dtype), m, v

        out = jax.tree.map(leaf, updates, state.mu, state.nu)
        new_updates, mu, nu = _split(updates, out, 3)
        return new_updates, AdaMuonState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(init_fn, update_fn)


def adamuon(
    learning_rate: optax.ScalarOrSchedule,
    *,
    beta: float = 0.95,
    b2: float = 0.999,
    eps: float = 1e-8,
    nesterov: bool = True,
    sign_stabilize: bool = False,
    rms: float = 0.2,
    ns_coeffs: Any = "muon",
    ns_steps: int = 5,
    orthogonalizer: Any = None,
    compute_dtype: Any = None,
    batch_ndim: int = 0,
    mu_dtype: Any = None,
    weight_decay: float = 0.0,
    labels: Any = None,
    adam_learning_rate: optax.ScalarOrSchedule | None = None,
    adam_b1: float = 0.9,
    adam_b2: float = 0.999,
    adam_eps: float = 1e-8,
    adam_weight_decay: float = 0.0,
) -> optax.GradientTransformationExtraArgs:
    """AdaMuon on matrices, AdamW on the rest; see :func:`scale_by_adamuon`.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = adamuon(0.02)
      >>> p = {"w": jnp.ones((4, 8)), "b": jnp.zeros(8)}
      >>> _ = tx.update(p, tx.init(p), p)
    """
    kw = locals()
    return matrix_optimizer(
        scale_by_adamuon(
            beta=beta,
            b2=b2,
            eps=eps,
            nesterov=nesterov,
            sign_stabilize=sign_stabilize,
            rms=rms,
            ns_coeffs=ns_coeffs,
            ns_steps=ns_steps,
            orthogonalizer=orthogonalizer,
            compute_dtype=compute_dtype,
            batch_ndim=batch_ndim,
            mu_dtype=mu_dtype,
        ),
        learning_rate,
        **_fallback_kwargs(kw),
    )


# ------------------------------------------------------------------------------------ NorMuon
class NorMuonState(NamedTuple):
    """State of :func:`scale_by_normuon`.

    Attributes:
      count: number of updates so far (int32 scalar).
      mu: the momentum ``m`` per leaf.
      nu: per-neuron second moment (at least float32), ``(B, 1, fan_out)`` (``in_out`` layout) or
        ``(B, fan_out, 1)`` (``out_in``) for the matrix view ``(B, rows, cols)`` of each leaf.
    """

    count: chex.Array
    mu: optax.Updates
    nu: optax.Updates


def _neuron_axis(layout):
    # The statistic is averaged over the fan-in axis, leaving one number per output neuron.
    return -2 if layout == "in_out" else -1


def scale_by_normuon(
    *,
    beta: float = 0.95,
    b2: float = 0.95,
    eps: float = 1e-10,
    nesterov: bool = True,
    ns_coeffs: Any = "muon",
    ns_steps: int = 5,
    orthogonalizer: Any = None,
    compute_dtype: Any = None,
    scaling: str = "shape",
    rms: float = 0.2,
    layout: str = "in_out",
    batch_ndim: int = 0,
    mu_dtype: Any = None,
) -> optax.GradientTransformation:
    r"""NorMuon: neuron-wise normalized Muon (the modded-nanogpt record optimizer; Li et al. 2025,
    "NorMuon: Making Muon more efficient and scalable", arXiv:2510.05491).

    .. math::
        O_t = \mathrm{orth}(u_t),\quad q_t = \mathrm{mean}_{\text{fan-in}}(O_t^2),\quad
        s_t = b_2 s_{t-1} + (1 - b_2) q_t,\quad
        \tilde O_t = O_t / \sqrt{\max(s_t, \epsilon)},\quad
        \Delta_t = c\, \tilde O_t \|O_t\|_F / \|\tilde O_t\|_F

    one second-moment entry per output neuron (columns of a Flax ``(in, out)`` kernel, rows of a
    PyTorch ``(out, in)`` weight), the result renormalized to the Frobenius norm it had before
    the neuron-wise division, then multiplied by Muon's shape factor ``c`` (``scaling``).
    No bias correction, as in the record code.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_normuon()
      >>> p = {"w": jnp.arange(32.0).reshape(4, 8)}
      >>> u, s = tx.update(p, tx.init(p))
      >>> s.nu["w"].shape
      (1, 1, 8)
    """
    _check_scaling(scaling, layout)
    orth = resolve_orthogonalizer(
        orthogonalizer, coeffs=ns_coeffs, steps=ns_steps, dtype=compute_dtype
    )
    axis = _neuron_axis(layout)

    def init_fn(params):
        def nu(p):
            shape = list(matrix_shape(p.shape, batch_ndim))
            shape[axis] = 1
            return jnp.zeros(shape, accum_dtype(p.dtype))

        return NorMuonState(
            count=jnp.zeros([], jnp.int32),
            mu=_init_momentum(params, mu_dtype),
            nu=jax.tree.map(nu, params),
        )

    def update_fn(updates, state, params=None):
        del params
        count = optax.safe_increment(state.count)

        def leaf(g, m, s):
            m, u = _momentum_direction(
                g, m, count, beta=beta, nesterov=nesterov, bias_correction=False
            )
            o = orth(to_matrices(u, batch_ndim)).astype(s.dtype)
            s = b2 * s + (1 - b2) * jnp.mean(jnp.square(o), axis=axis, keepdims=True)
            o_tilde = o * jax.lax.rsqrt(jnp.maximum(s, eps))
            o_tilde = o_tilde * (_frobenius(o) / jnp.maximum(_frobenius(o_tilde), 1e-10))
            c = shape_factor(
                g.shape, scaling=scaling, rms=rms, batch_ndim=batch_ndim, layout=layout
            )
            return (c * o_tilde).reshape(g.shape).astype(g.dtype), m, s

        out = jax.tree.map(leaf, updates, state.mu, state.nu)
        new_updates, mu, nu = _split(updates, out, 3)
        return new_updates, NorMuonState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(init_fn, update_fn)


def normuon(
    learning_rate: optax.ScalarOrSchedule,
    *,
    beta: float = 0.95,
    b2: float = 0.95,
    eps: float = 1e-10,
    nesterov: bool = True,
    ns_coeffs: Any = "muon",
    ns_steps: int = 5,
    orthogonalizer: Any = None,
    compute_dtype: Any = None,
    scaling: str = "shape",
    rms: float = 0.2,
    layout: str = "in_out",
    batch_ndim: int = 0,
    mu_dtype: Any = None,
    weight_decay: float = 0.0,
    labels: Any = None,
    adam_learning_rate: optax.ScalarOrSchedule | None = None,
    adam_b1: float = 0.9,
    adam_b2: float = 0.999,
    adam_eps: float = 1e-8,
    adam_weight_decay: float = 0.0,
) -> optax.GradientTransformationExtraArgs:
    """NorMuon on matrices, AdamW on the rest; see :func:`scale_by_normuon`.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = normuon(0.02)
      >>> p = {"w": jnp.ones((4, 8)), "b": jnp.zeros(8)}
      >>> _ = tx.update(p, tx.init(p), p)
    """
    kw = locals()
    return matrix_optimizer(
        scale_by_normuon(
            beta=beta,
            b2=b2,
            eps=eps,
            nesterov=nesterov,
            ns_coeffs=ns_coeffs,
            ns_steps=ns_steps,
            orthogonalizer=orthogonalizer,
            compute_dtype=compute_dtype,
            scaling=scaling,
            rms=rms,
            layout=layout,
            batch_ndim=batch_ndim,
            mu_dtype=mu_dtype,
        ),
        learning_rate,
        **_fallback_kwargs(kw),
    )


# --------------------------------------------------------------------------------------- AdaGO
class AdaGOState(NamedTuple):
    """State of :func:`scale_by_adago`.

    Attributes:
      count: number of updates so far (int32 scalar).
      mu: the momentum ``M`` per leaf.
      v_sq: the accumulated clipped squared gradient norms ``v_t^2``, one scalar (at least
        float32) per matrix (shape ``(B,)`` for the matrix view ``(B, m, n)`` of each leaf).
    """

    count: chex.Array
    mu: optax.Updates
    v_sq: optax.Updates


def scale_by_adago(
    *,
    beta: float = 0.95,
    gamma: float = 1.0,
    v0: float = 1e-6,
    min_step: float = 1e-3,
    nesterov: bool = False,
    ns_coeffs: Any = "muon",
    ns_steps: int = 5,
    orthogonalizer: Any = None,
    compute_dtype: Any = None,
    scaling: str = "none",
    rms: float = 0.2,
    layout: str = "in_out",
    batch_ndim: int = 0,
    mu_dtype: Any = None,
) -> optax.GradientTransformation:
    r"""AdaGO (Zhang, Liu, Schaeffer 2025, "AdaGrad Meets Muon: Adaptive Stepsizes for Orthogonal
    Updates", arXiv:2509.02981, Algorithm 2).

    .. math::
        M_t = \mu M_{t-1} + (1 - \mu) G_t,\quad
        v_t^2 = v_{t-1}^2 + \min(\|G_t\|_F^2, \gamma^2),\quad
        \Delta_t = \max\!\Big(\epsilon,\ \frac{\min(\|G_t\|_F, \gamma)}{v_t}\Big)\,
        \mathrm{orth}(M_t)

    and the alias steps ``-eta Delta_t``: the paper's step size
    ``alpha_t = max(eps, eta min(||G||, gamma) / v_t)`` with the floor expressed relative to the
    learning rate (``min_step = eps / eta``) so that a schedule scales the whole step. The
    orthogonal direction is kept intact (no element-wise adaptivity); one scalar per matrix.
    ``v0 > 0`` is the paper's initial accumulator, ``gamma`` its clipping threshold of the
    gradient norm and ``eps`` its lower bound of the step.

    Defaults: the paper's algorithm takes ``gamma``, ``v0`` and ``eps`` as inputs, and the values
    of its experiments could not be found in the sources available when this was written (only
    the algorithm statement), so ``gamma = 1``, ``v0 = 1e-6`` and ``min_step = 1e-3`` are this
    library's choices, not the paper's: gradient norms above 1 count as 1, the first step is
    almost the full learning rate (``min(||G_1||, gamma) / v_1 ~ 1``), and the step never falls
    below ``1e-3 eta``. Other ports chose differently (optax's contrib AdaGO, which optax
    0.2.8 does not ship: ``gamma = 1``, ``v0 = 1``, ``eps = 1e-6`` absolute; pytorch-optimizer's
    ``AdaGO``: ``gamma = 10``, ``eps = 5e-4``, ``v = 1e-6``); set them for the problem at hand.

    Args:
      beta: momentum decay ``mu``.
      gamma: clipping threshold of the gradient's Frobenius norm.
      v0: initial accumulator ``v_0`` (the state starts at ``v0^2``).
      min_step: lower bound of the step relative to the learning rate (``eps / eta``).
      nesterov: Nesterov direction; False (the paper's heavy-ball ``orth(M_t)``) by default.
      ns_coeffs, ns_steps, orthogonalizer, compute_dtype: the orthogonalizer, as in
        :func:`scale_by_muon`.
      scaling: shape factor mode (module doc); ``"none"`` as in the paper.
      rms: target RMS of the ``"consistent_rms"`` / ``"spectral"`` mode.
      layout: ``"in_out"`` (Flax) or ``"out_in"`` (PyTorch), for the shape factor.
      batch_ndim: leading axes of every leaf that index independent matrices.
      mu_dtype: momentum dtype (default: the leaf's).

    Example:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_adago()
      >>> p = {"w": jnp.ones((4, 8))}
      >>> u, s = tx.update(p, tx.init(p))
      >>> s.v_sq["w"].shape
      (1,)
    """
    _check_scaling(scaling, layout)
    orth = resolve_orthogonalizer(
        orthogonalizer, coeffs=ns_coeffs, steps=ns_steps, dtype=compute_dtype
    )

    def init_fn(params):
        def v_sq(p):
            batch = matrix_shape(p.shape, batch_ndim)[0]
            return jnp.full((batch,), v0**2, accum_dtype(p.dtype))

        return AdaGOState(
            count=jnp.zeros([], jnp.int32),
            mu=_init_momentum(params, mu_dtype),
            v_sq=jax.tree.map(v_sq, params),
        )

    def update_fn(updates, state, params=None):
        del params
        count = optax.safe_increment(state.count)

        def leaf(g, m, v_sq):
            m, u = _momentum_direction(
                g, m, count, beta=beta, nesterov=nesterov, bias_correction=False
            )
            gnorm = _frobenius(to_matrices(g, batch_ndim))[:, 0, 0]
            clipped = jnp.minimum(gnorm, gamma)
            v_sq = v_sq + jnp.square(clipped)
            step = jnp.maximum(min_step, clipped * jax.lax.rsqrt(v_sq))
            o = orth(to_matrices(u, batch_ndim)).astype(v_sq.dtype) * step[:, None, None]
            c = shape_factor(
                g.shape, scaling=scaling, rms=rms, batch_ndim=batch_ndim, layout=layout
            )
            return (c * o).reshape(g.shape).astype(g.dtype), m, v_sq

        out = jax.tree.map(leaf, updates, state.mu, state.v_sq)
        new_updates, mu, v_sq = _split(updates, out, 3)
        return new_updates, AdaGOState(count=count, mu=mu, v_sq=v_sq)

    return optax.GradientTransformation(init_fn, update_fn)


def adago(
    learning_rate: optax.ScalarOrSchedule,
    *,
    beta: float = 0.95,
    gamma: float = 1.0,
    v0: float = 1e-6,
    min_step: float = 1e-3,
    nesterov: bool = False,
    ns_coeffs: Any = "muon",
    ns_steps: int = 5,
    orthogonalizer: Any = None,
    compute_dtype: Any = None,
    scaling: str = "none",
    rms: float = 0.2,
    layout: str = "in_out",
    batch_ndim: int = 0,
    mu_dtype: Any = None,
    weight_decay: float = 0.0,
    labels: Any = None,
    adam_learning_rate: optax.ScalarOrSchedule | None = None,
    adam_b1: float = 0.9,
    adam_b2: float = 0.999,
    adam_eps: float = 1e-8,
    adam_weight_decay: float = 0.0,
) -> optax.GradientTransformationExtraArgs:
    """AdaGO on matrices, AdamW on the rest; see :func:`scale_by_adago`.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = adago(0.05)
      >>> p = {"w": jnp.ones((4, 8)), "b": jnp.zeros(8)}
      >>> _ = tx.update(p, tx.init(p), p)
    """
    kw = locals()
    return matrix_optimizer(
        scale_by_adago(
            beta=beta,
            gamma=gamma,
            v0=v0,
            min_step=min_step,
            nesterov=nesterov,
            ns_coeffs=ns_coeffs,
            ns_steps=ns_steps,
            orthogonalizer=orthogonalizer,
            compute_dtype=compute_dtype,
            scaling=scaling,
            rms=rms,
            layout=layout,
            batch_ndim=batch_ndim,
            mu_dtype=mu_dtype,
        ),
        learning_rate,
        **_fallback_kwargs(kw),
    )


# ---------------------------------------------------------------------------------------- AuON
def scale_by_auon(
    *,
    beta: float = 0.95,
    gamma: float = 1.5,
    nesterov: bool = True,
    ns_steps: int = 0,
    ns_coeffs: Any = "muon",
    orthogonalizer: Any = None,
    compute_dtype: Any = None,
    scaling: str = "shape",
    rms: float = 0.2,
    layout: str = "in_out",
    batch_ndim: int = 0,
    mu_dtype: Any = None,
) -> optax.GradientTransformation:
    r"""AuON (Maity 2025, "AuON: A Linear-time Alternative to Semi-Orthogonal Momentum Updates",
    arXiv:2509.24320) and, with ``ns_steps > 0``, its hybrid variant.

    .. math::
        X_t = u_t / (\|u_t\|_F + 10^{-7}),\quad
        r_t = \sqrt{\mathrm{mean}(\cosh(\gamma X_t)^2)},\quad
        \Delta_t = c\, X_t / (r_t + 10^{-8})

    with the Muon momentum direction ``u_t`` and shape factor ``c``. Hybrid (``ns_steps > 0``):
    ``X_t`` is ``orth(u_t)`` renormalized to unit Frobenius norm, where ``orth`` is the
    ``orthogonalizer`` (default ``ns_steps`` Newton-Schulz steps with ``ns_coeffs``).

    Implemented as the paper states it. Note what it implies: for an ``N``-entry matrix with
    ``||X||_F = 1``, ``1 <= r <= sqrt(1 + sinh(gamma)^2 / N)``, so ``r`` is within a hair of 1
    for any real layer and the step is essentially Frobenius-normalized momentum (update RMS
    ``~ 1 / sqrt(N)``, far below Muon's); tune the learning rate accordingly.

    Args:
      beta: momentum decay.
      gamma: the cosh scale ``gamma``.
      nesterov: Nesterov direction (default) or heavy ball ``u = m``.
      ns_steps: 0 for plain AuON (linear time, no orthogonalizer); ``> 0`` for the hybrid, with
        this many orthogonalizer steps.
      ns_coeffs: coefficient preset / table of the default Newton-Schulz orthogonalizer.
      orthogonalizer: the hybrid's orthogonalizer: None or ``"newton_schulz"``,
        ``"polar_express"``, ``"svd"`` or a callable ``x[..., m, n] -> x``; only used (and only
        accepted) with ``ns_steps > 0``.
      compute_dtype: orthogonalizer dtype (None: bf16 on accelerators, float32 on CPU).
      scaling: shape factor mode (module doc).
      rms: target RMS of the ``"consistent_rms"`` / ``"spectral"`` mode.
      layout: ``"in_out"`` (Flax) or ``"out_in"`` (PyTorch), for the shape factor.
      batch_ndim: leading axes of every leaf that index independent matrices.
      mu_dtype: momentum dtype (default: the leaf's).

    Example:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_auon(scaling="none")
      >>> p = {"w": jnp.ones((4, 8))}
      >>> u, _ = tx.update(p, tx.init(p))
      >>> float(jnp.linalg.norm(u["w"])) < 1.0
      True
    """
    _check_scaling(scaling, layout)
    if ns_steps < 0:
        raise ValueError(f"ns_steps must be >= 0, got {ns_steps}")
    if orthogonalizer is not None and ns_steps == 0:
        # Plain AuON has no orthogonalizer; silently ignoring one would hide a misconfiguration.
        raise ValueError("orthogonalizer= is the hybrid's: set ns_steps > 0 (or use auon_hybrid)")
    orth = (
        resolve_orthogonalizer(
            orthogonalizer, coeffs=ns_coeffs, steps=ns_steps, dtype=compute_dtype
        )
        if ns_steps
        else None
    )

    def init_fn(params):
        return MuonState(count=jnp.zeros([], jnp.int32), mu=_init_momentum(params, mu_dtype))

    def update_fn(updates, state, params=None):
        del params
        count = optax.safe_increment(state.count)

        def leaf(g, m):
            m, u = _momentum_direction(
                g, m, count, beta=beta, nesterov=nesterov, bias_correction=False
            )
            x = to_matrices(u, batch_ndim).astype(accum_dtype(u.dtype))
            if orth is not None:
                x = orth(x)
            x = x / (_frobenius(x) + 1e-7)
            r = jnp.sqrt(jnp.mean(jnp.square(jnp.cosh(gamma * x)), axis=(-2, -1), keepdims=True))
            c = shape_factor(
                g.shape, scaling=scaling, rms=rms, batch_ndim=batch_ndim, layout=layout
            )
            return (c * x / (r + 1e-8)).reshape(g.shape).astype(g.dtype), m

        new_updates, mu = _split(updates, jax.tree.map(leaf, updates, state.mu), 2)
        return new_updates, MuonState(count=count, mu=mu)

    return optax.GradientTransformation(init_fn, update_fn)


def auon(
    learning_rate: optax.ScalarOrSchedule,
    *,
    beta: float = 0.95,
    gamma: float = 1.5,
    nesterov: bool = True,
    ns_steps: int = 0,
    ns_coeffs: Any = "muon",
    orthogonalizer: Any = None,
    compute_dtype: Any = None,
    scaling: str = "shape",
    rms: float = 0.2,
    layout: str = "in_out",
    batch_ndim: int = 0,
    mu_dtype: Any = None,
    weight_decay: float = 0.0,
    labels: Any = None,
    adam_learning_rate: optax.ScalarOrSchedule | None = None,
    adam_b1: float = 0.9,
    adam_b2: float = 0.999,
    adam_eps: float = 1e-8,
    adam_weight_decay: float = 0.0,
) -> optax.GradientTransformationExtraArgs:
    """AuON (``ns_steps=0``) or hybrid AuON on matrices, AdamW on the rest; see
    :func:`scale_by_auon`.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = auon(0.1)
      >>> p = {"w": jnp.ones((4, 8)), "b": jnp.zeros(8)}
      >>> _ = tx.update(p, tx.init(p), p)
    """
    kw = locals()
    return matrix_optimizer(
        scale_by_auon(
            beta=beta,
            gamma=gamma,
            nesterov=nesterov,
            ns_steps=ns_steps,
            ns_coeffs=ns_coeffs,
            orthogonalizer=orthogonalizer,
            compute_dtype=compute_dtype,
            scaling=scaling,
            rms=rms,
            layout=layout,
            batch_ndim=batch_ndim,
            mu_dtype=mu_dtype,
        ),
        learning_rate,
        **_fallback_kwargs(kw),
    )


def auon_hybrid(
    learning_rate: optax.ScalarOrSchedule,
    *,
    beta: float = 0.95,
    gamma: float = 1.5,
    nesterov: bool = True,
    ns_steps: int = 1,
    ns_coeffs: Any = "muon",
    orthogonalizer: Any = None,
    compute_dtype: Any = None,
    scaling: str = "shape",
    rms: float = 0.2,
    layout: str = "in_out",
    batch_ndim: int = 0,
    mu_dtype: Any = None,
    weight_decay: float = 0.0,
    labels: Any = None,
    adam_learning_rate: optax.ScalarOrSchedule | None = None,
    adam_b1: float = 0.9,
    adam_b2: float = 0.999,
    adam_eps: float = 1e-8,
    adam_weight_decay: float = 0.0,
) -> optax.GradientTransformationExtraArgs:
    r"""Hybrid AuON: :func:`auon` with ``ns_steps=1`` by default.

    .. math::
        X_t = \mathrm{orth}(u_t) / \|\mathrm{orth}(u_t)\|_F,\quad
        \Delta_t = c\, X_t / \sqrt{\mathrm{mean}(\cosh(\gamma X_t)^2)}

    The paper's hybrid variant: Newton-Schulz steps (one by default) before AuON's cosh-RMS
    normalization; ``orthogonalizer=`` swaps in any other orthogonalizer. Registered under its
    own name so that a config can select it. See :func:`scale_by_auon` for every argument.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = auon_hybrid(0.1, orthogonalizer="polar_express", ns_steps=2)
      >>> p = {"w": jnp.ones((4, 8)), "b": jnp.zeros(8)}
      >>> _ = tx.update(p, tx.init(p), p)
    """
    return auon(**locals())


OPTIMIZERS.register("muon", muon)
OPTIMIZERS.register("adamuon", adamuon)
OPTIMIZERS.register("normuon", normuon)
OPTIMIZERS.register("adago", adago)
OPTIMIZERS.register("auon", auon)
OPTIMIZERS.register("auon_hybrid", auon_hybrid)
