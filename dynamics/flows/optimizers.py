"""The optimizers a flow models: their state, preconditioner, threshold and stable vector field.

Time t counts optimizer steps, so one step of the discrete optimizer is one unit of t.

* Gradient descent ``w <- w - lr grad L``: state ``{"w"}``, preconditioner P = I, stable flow
  ``dw/dt = -lr grad L`` (gradient flow), threshold 2/lr on the eigenvalues of H.
* RMSProp as in optax (``optax.rmsprop(lr, decay, eps)``): ``nu <- d nu + (1 - d) g^2``,
  ``w <- w - lr g / sqrt(nu + eps)``. State ``{"w", "nu"}``, P = sqrt(nu + eps), stable flow
  ``dw/dt = -lr P^-1 grad L``, ``dnu/dt = (1 - d)(grad L^2 - nu)``; the threshold 2/lr bounds the
  eigenvalues of the effective Hessian P^-1/2 H P^-1/2 (Cohen et al. 2022, "Adaptive gradient
  methods at the edge of stability"; the eigenvalues of P^-1 H). The second moment starts at
  ``grad L(w_0)^2`` (``initial_state``) in both the flows and the discrete run, so that the
  first step is not the sign-like step of nu = 0.

Example:
  >>> import jax.numpy as jnp
  >>> opt = Optimizer("rmsprop", learning_rate=0.1, decay=0.9, eps=0.0)
  >>> state = opt.initial_state(jnp.ones(2), jnp.array([3.0, 4.0]))
  >>> opt.preconditioner(state)
  Array([3., 4.], dtype=float32)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

PyTree = Any
KINDS = ("sgd", "rmsprop")


@dataclasses.dataclass(frozen=True)
class Optimizer:
    """A full-batch optimizer in continuous time (see the module doc).

    Attributes:
      name: ``"sgd"`` (gradient descent) or ``"rmsprop"``.
      learning_rate: lr.
      decay: RMSProp's d (unused by gradient descent).
      eps: RMSProp's eps, inside the square root as in optax.
    """

    name: str
    learning_rate: float
    decay: float = 0.9
    eps: float = 1e-8

    def __post_init__(self):
        if self.name not in KINDS:
            raise ValueError(f"unknown optimizer {self.name!r}; valid choices: {', '.join(KINDS)}")

    @property
    def adaptive(self) -> bool:
        return self.name == "rmsprop"

    @property
    def threshold(self) -> float:
        """2 / lr: the stability threshold of the (effective) sharpness."""
        return 2.0 / self.learning_rate

    def initial_state(self, params: PyTree, grads: PyTree) -> dict:
        """``{"w": params}`` (and ``"nu": grads^2`` for RMSProp)."""
        if not self.adaptive:
            return {"w": params}
        return {"w": params, "nu": jax.tree.map(jnp.square, grads)}

    def preconditioner(self, state: dict) -> PyTree:
        """P (ones for gradient descent)."""
        if not self.adaptive:
            return jax.tree.map(jnp.ones_like, state["w"])
        return jax.tree.map(lambda n: jnp.sqrt(n + self.eps), state["nu"])

    def preconditioner_derivative(self, state: dict) -> PyTree:
        """dP/dnu element-wise (RMSProp only): 1 / (2 sqrt(nu + eps))."""
        return jax.tree.map(lambda n: 0.5 / jnp.sqrt(n + self.eps), state["nu"])

    def velocity(self, state: dict, force: PyTree, nu_target: PyTree | None = None) -> dict:
        """d state / dt for the averaged gradient ``force`` and averaged squared gradient
        ``nu_target`` (``force^2`` when None): ``dw/dt = -lr P^-1 force``,
        ``dnu/dt = (1 - d)(nu_target - nu)``."""
        p = self.preconditioner(state)
        rate = {"w": jax.tree.map(lambda f, q: -self.learning_rate * f / q, force, p)}
        if self.adaptive:
            target = jax.tree.map(jnp.square, force) if nu_target is None else nu_target
            rate["nu"] = jax.tree.map(
                lambda t, n: (1.0 - self.decay) * (t - n), target, state["nu"]
            )
        return rate

    def transform(self) -> optax.GradientTransformation:
        """The discrete optimizer as an optax transform (its state is set by ``discrete_state``)."""
        if not self.adaptive:
            return optax.sgd(self.learning_rate)
        return optax.rmsprop(self.learning_rate, decay=self.decay, eps=self.eps)

    def discrete_state(self, params: PyTree, grads: PyTree) -> optax.OptState:
        """The optax state at step 0, with RMSProp's nu at ``grads^2`` like the flows."""
        tx = self.transform()
        state = tx.init(params)
        if not self.adaptive:
            return state
        return jax.tree.map(
            lambda s: (
                s._replace(nu=jax.tree.map(jnp.square, grads))
                if isinstance(s, optax.ScaleByRmsState)
                else s
            ),
            state,
            is_leaf=lambda s: isinstance(s, optax.ScaleByRmsState),
        )
