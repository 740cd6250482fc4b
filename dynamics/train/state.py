"""The training state: everything a checkpoint must hold to continue a run exactly."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax


class TrainState(NamedTuple):
    """Step counter, parameters and optimizer state, a pytree the jitted step donates.

    Attributes:
      step: number of optimizer updates applied so far (an int32 scalar array). It is also the
        position of the minibatch iterator: batch ``t`` is a pure function of ``(seed, t)``.
      params: the model parameters, a plain pytree of arrays.
      opt_state: the optax state of ``chain(filter, optimizer, constraint)``.
    """

    step: jax.Array
    params: Any
    opt_state: Any
