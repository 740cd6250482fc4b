"""Flows: differential equations for the trajectory of an optimizer at the edge of stability.

* ``optimizers``: gradient descent and RMSProp in continuous time (state, preconditioner,
  threshold 2/lr, stable vector field) and as the optax transforms of the discrete run.
* ``stable``: the stable flow (gradient flow, or RMSProp's ODE), integrated by diffrax with
  adaptive steps, stopped when the effective sharpness explodes.
* ``central``: the central flow of Cohen et al. 2025, which predicts the time-averaged trajectory
  of the oscillating optimizer, its time-averaged loss and the oscillation variances.
* ``complementarity``: the small semidefinite complementarity problem that sets the oscillation
  covariance at every substep.
* ``edge``: warm-started eigenpairs of the (effective) Hessian and the edge band.
* ``experiment``: the discrete optimizer, its central flow and its stable flow side by side from
  one initialization (``python -m experiments.run --config=configs/central_flows.py``).

Example:
  >>> import jax, jax.numpy as jnp
  >>> from dynamics import flows
  >>> loss = lambda w, b: 0.5 * jnp.sum(b * w**2)
  >>> opt = flows.Optimizer("sgd", learning_rate=0.1)
  >>> flow = flows.CentralFlow(loss, opt, k=1, num_iters=3)
  >>> cs = flow.init({"w": jnp.ones(3)}, jax.random.key(0))
  >>> cs, info = flow.advance(cs, jax.random.key(1), jnp.arange(3.0))
  >>> float(info.loss)  # at t = 0
  1.5
"""

from dynamics.flows.central import CentralFlow, CentralInfo, CentralState
from dynamics.flows.complementarity import Solution
from dynamics.flows.complementarity import solve as solve_complementarity
from dynamics.flows.optimizers import Optimizer
from dynamics.flows.stable import StableFlow

__all__ = [
    "CentralFlow",
    "CentralInfo",
    "CentralState",
    "Optimizer",
    "Solution",
    "StableFlow",
    "solve_complementarity",
]
