"""Learning-rate schedules by name: ``SCHEDULES.build(name, {learning_rate, num_steps, ...})``.

Every constructor takes the peak ``learning_rate`` and the run's ``num_steps`` and returns an optax
schedule ``step -> lr``:

* ``constant``: lr.
* ``linear_warmup``: ``init_value + (lr - init_value) * min(step / warmup_steps, 1)``.
* ``cosine``: ``lr * (alpha + (1 - alpha) * (1 + cos(pi * step / num_steps)) / 2)``
  (Loshchilov & Hutter 2017, without restarts).
* ``warmup_cosine``: ``linear_warmup`` to lr over ``warmup_steps``, then cosine decay to
  ``end_value`` at ``num_steps``.
* ``wsd``: warmup-stable-decay (Hu et al. 2024, MiniCPM; Hägele et al. 2024): ``linear_warmup``
  over ``warmup_steps``, constant lr, then a decay over the last ``D = round(decay_fraction *
  num_steps)`` steps to ``end_value``: with ``s = (step - (num_steps - D)) / D`` in ``[0, 1]``,
  ``lr_end + (lr - lr_end) * g(s)`` where ``g(s)`` is ``1 - s`` (``"linear"``),
  ``(1 + cos(pi s)) / 2`` (``"cosine"``) or ``1 - sqrt(s)`` (``"1-sqrt"``, the cooldown Hägele
  et al. 2024 find best, matching a cosine run at 20% decay).

Any optax schedule by import path (``"optax:warmup_cosine_decay_schedule"``, or a user's
function of the same kind) is wired as the registered ones: its peak parameter, the first of
``peak_value``, ``init_value``, ``value`` that it takes, is ``optimizer.learning_rate`` (and not a
config field); ``decay_steps``, when it takes one, defaults to ``num_steps``; its other parameters
are the fields of ``optimizer.schedule``, checked against its signature.

Example:
  >>> from dynamics.train.schedules import SCHEDULES
  >>> lr = SCHEDULES.build("warmup_cosine", dict(learning_rate=1.0, num_steps=100, warmup_steps=10))
  >>> float(lr(5)), float(lr(10)), float(lr(100))
  (0.5, 1.0, 0.0)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import optax

from dynamics.registry import ConfigError, Registry

# The parameter of an optax schedule that optimizer.learning_rate sets, in order of preference.
PEAK_PARAMETERS = ("peak_value", "init_value", "value")


def schedule_by_path(obj: Any, name: str, where: str) -> Callable[..., optax.Schedule]:
    """``build(learning_rate, num_steps, **fields)`` for the optax-style schedule ``obj``."""
    try:
        params = dict(inspect.signature(obj).parameters)
    except (TypeError, ValueError):
        params = {}
    peak = next((p for p in PEAK_PARAMETERS if p in params), None)
    if not callable(obj) or peak is None:
        raise ConfigError(
            f"{where}.name {name!r} is not a schedule constructor with a peak parameter "
            f"({', '.join(PEAK_PARAMETERS)}), e.g. optax:warmup_cosine_decay_schedule"
        )
    del params[peak]
    fields = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params.values()]
    required = [p.name for p in fields if p.default is inspect.Parameter.empty]
    if "decay_steps" in required:
        required.remove("decay_steps")

    def build(learning_rate, num_steps, **kwargs):
        if "decay_steps" in params:
            kwargs.setdefault("decay_steps", num_steps)
        missing = [n for n in required if n not in kwargs]
        if missing:
            raise ConfigError(
                f"missing field {where}.{missing[0]} for {name}; its fields: "
                + ", ".join(p.name for p in fields)
            )
        return obj(**{peak: learning_rate}, **kwargs)

    positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
    build.__signature__ = inspect.Signature(
        [inspect.Parameter("learning_rate", positional), inspect.Parameter("num_steps", positional)]
        + [p.replace(default=None) if p.name == "decay_steps" else p for p in fields]
    )
    build.__name__ = build.__qualname__ = getattr(obj, "__name__", name)
    return build


SCHEDULES: Registry = Registry("schedule", by_path=schedule_by_path)


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


WSD_DECAYS = ("linear", "cosine", "1-sqrt")


@SCHEDULES.register("wsd")
def wsd(
    learning_rate: float,
    num_steps: int,
    warmup_steps: int = 0,
    decay_fraction: float = 0.2,
    decay: str = "1-sqrt",
    init_value: float = 0.0,
    end_value: float = 0.0,
) -> optax.Schedule:
    """Warmup-stable-decay: linear warm-up, constant ``learning_rate``, then a ``decay`` shaped
    cooldown over the last ``decay_fraction`` of the run (module doc).

    Example:
      >>> lr = wsd(1.0, 100, warmup_steps=10, decay_fraction=0.2, decay="linear")
      >>> [round(float(lr(t)), 3) for t in (5, 10, 80, 90, 100)]
      [0.5, 1.0, 1.0, 0.5, 0.0]
    """
    if decay not in WSD_DECAYS:
        raise ConfigError(
            f"unknown optimizer.schedule.decay {decay!r}; valid choices: {', '.join(WSD_DECAYS)}"
        )
    if not 0 <= decay_fraction <= 1:
        raise ConfigError(
            f"optimizer.schedule.decay_fraction must be in [0, 1], got {decay_fraction!r}"
        )
    decay_steps = round(decay_fraction * num_steps)
    if warmup_steps + decay_steps > num_steps:
        raise ConfigError(
            f"optimizer.schedule.warmup_steps ({warmup_steps}) + the {decay_steps} decay steps "
            f"(decay_fraction * num_steps) exceed num_steps = {num_steps}"
        )
    start = num_steps - decay_steps
    shapes = {
        "linear": lambda s: 1 - s,
        "cosine": lambda s: (1 + jnp.cos(jnp.pi * s)) / 2,
        "1-sqrt": lambda s: 1 - jnp.sqrt(s),
    }

    def schedule(step):
        step = jnp.asarray(step, jnp.result_type(float))
        warm = init_value + (learning_rate - init_value) * step / max(warmup_steps, 1)
        s = jnp.clip((step - start) / max(decay_steps, 1), 0.0, 1.0)
        cool = end_value + (learning_rate - end_value) * shapes[decay](s)
        return jnp.where(step < warmup_steps, warm, jnp.where(step < start, learning_rate, cool))

    return schedule
