"""The stable flow: the optimizer's ODE without oscillation, integrated by diffrax.

For gradient descent the stable flow is gradient flow, dw/dt = -lr grad L(w); for RMSProp it is
dw/dt = -lr P^-1 grad L, dnu/dt = (1 - d)(grad L^2 - nu) (``dynamics.flows.optimizers``). It is
what the optimizer would do if it were stable: Cohen et al. 2025 use it as the baseline the
central flow improves on. Its vector field is smooth, so it is integrated by diffrax (Kidger 2021,
"On Neural Differential Equations") with an adaptive explicit Runge-Kutta method (Tsit5) and a PID
step-size controller: once the sharpness S exceeds 2/lr the field gets stiff (the step of an
explicit method must stay below about 2 / (lr S) x its stability region, where a fixed step of
``1/substeps`` would go unstable at S > 2 x substeps / lr), and the controller shrinks the steps
instead. :class:`StableFlow` advances one unit of time (one optimizer step) per call, so the
caller can stop it when the effective sharpness explodes (``max_sharpness`` in the experiment).

Example:
  >>> import jax.numpy as jnp
  >>> from dynamics.flows.optimizers import Optimizer
  >>> loss = lambda w, b: 0.5 * jnp.sum(b * w**2)
  >>> flow = StableFlow(loss, Optimizer("sgd", learning_rate=0.5))
  >>> state = flow.advance({"w": jnp.ones(2)}, 0.0, jnp.array([1.0, 2.0]))  # w e^{-lr b t}
  >>> [round(float(w), 4) for w in state["w"]]
  [0.6065, 0.3679]
"""

from __future__ import annotations

from collections.abc import Callable

import diffrax
import jax

from dynamics.flows.optimizers import Optimizer


class StableFlow:
    """The stable flow of ``opt`` on ``loss_fn(params, *args)``, one unit of time per call.

    Args:
      loss_fn: the full-batch loss.
      opt: the optimizer.
      rtol, atol: the step-size controller's tolerances.
      max_steps: the most solver steps per unit of time.
    """

    def __init__(
        self,
        loss_fn: Callable[..., jax.Array],
        opt: Optimizer,
        *,
        rtol: float = 1e-7,
        atol: float = 1e-9,
        max_steps: int = 4096,
    ):
        self.loss_fn, self.opt = loss_fn, opt
        self.rtol, self.atol, self.max_steps = rtol, atol, max_steps
        self.advance = jax.jit(self._advance)

    def vector_field(self, t, state, args):
        del t
        grads = jax.grad(self.loss_fn)(state["w"], *args)
        return self.opt.velocity(state, grads)

    def _advance(self, state: dict, t0, *args) -> dict:
        """The state at ``t0 + 1`` from the state at ``t0``."""
        solution = diffrax.diffeqsolve(
            diffrax.ODETerm(self.vector_field),
            diffrax.Tsit5(),
            t0=t0,
            t1=t0 + 1.0,
            dt0=0.25,
            y0=state,
            args=args,
            saveat=diffrax.SaveAt(t1=True),
            stepsize_controller=diffrax.PIDController(rtol=self.rtol, atol=self.atol),
            max_steps=self.max_steps,
        )
        return jax.tree.map(lambda y: y[-1], solution.ys)
