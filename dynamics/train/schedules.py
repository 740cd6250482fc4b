"""Learning-rate schedules by name: ``SCHEDULES.build(name, {learning_rate, num_steps, ...})``.

Every constructor takes the peak ``learning_rate`` and the run's ``num_steps`` and returns an optax
schedule ``step -> lr``:

* ``constant``: lr.
* ``linear_warmup``: ``init_value + (lr - init_value) * min(step / warmup_steps, 1)``.
* ``cosine``: ``lr * (alpha + (1 - alpha) * (1 + cos(pi * step / num_steps)) / 2)``
  (Loshchilov & Hutter 2017, without restarts).
* ``warmup_cosine``: ``linear_warmup`` to lr over ``warmup_steps``, then cosine decay to
  ``end_value`` at ``num_steps``.

Example:
  >>> from dynamics.train.schedules import SCHEDULES
  >>> lr = SCHEDULES.build("warmup_cosine", dict(learning_rate=1.0, num_steps=100, warmup_steps=10))
  >>> float(lr(5)), float(lr(10)), float(lr(100))
  (0.5, 1.0, 0.0)
"""

from __future__ import annotations

import optax

from dynamics.registry import Registry

SCHEDULES: Registry = Registry("schedule")


@SCHEDULES.register("constant")
def constant(learning_rate: float, num_steps: int) -> optax.Schedule:
    """The same learning rate at every step."""
    del num_steps
    return optax.constant_schedule(learning_rate)


@SCHEDULES.register("linear_warmup")
def linear_warmup(
    learning_rate: float, num_steps: int, warmup_steps: int = 100, init_value: float = 0.0
) -> optax.Schedule:
    """Linear ramp from ``init_value`` to ``learning_rate`` over ``warmup_steps``, then constant."""
    del num_steps
    return optax.linear_schedule(init_value, learning_rate, max(warmup_steps, 1))


@SCHEDULES.register("cosine")
def cosine(learning_rate: float, num_steps: int, alpha: float = 0.0) -> optax.Schedule:
    """Cosine decay from ``learning_rate`` to ``alpha * learning_rate`` at ``num_steps``."""
    return optax.cosine_decay_schedule(learning_rate, num_steps, alpha=alpha)


@SCHEDULES.register("warmup_cosine")
def warmup_cosine(
    learning_rate: float,
    num_steps: int,
    warmup_steps: int = 100,
    init_value: float = 0.0,
    end_value: float = 0.0,
) -> optax.Schedule:
    """Linear warm-up to ``learning_rate``, then cosine decay to ``end_value`` at ``num_steps``."""
    return optax.warmup_cosine_decay_schedule(
        init_value, learning_rate, max(warmup_steps, 1), max(num_steps, warmup_steps + 1), end_value
    )
