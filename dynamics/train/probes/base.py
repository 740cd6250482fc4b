"""The probe interface: "every N steps, compute f(state, data) -> metrics".

A probe is built from its config entry (``config.probes.<name> = dict(every=N, ...)``) by the
``PROBES`` registry; once the run's :class:`ProbeContext` exists, the training loop calls
``setup(ctx)`` once, where the probe builds its jitted functions, and then calls the probe on
the host between jitted steps. A probe may carry a state (for example the eigenvectors that warm
start the next Lanczos run); that state is a pytree of arrays saved in every checkpoint, so a
resumed run computes exactly the metrics an uninterrupted one would.

A probe's random stream is salted by its registry name (``name``, a class attribute equal to the
name it is registered under): :func:`probe_key` folds ``zlib.crc32(name)`` and the step into the
run's seed, so renaming a class changes nothing and two probes never share a stream.

Metric names are flat strings. A metric ``X`` logged together with ``X_threshold`` is plotted
against that threshold (e.g. ``sharpness`` and ``sharpness_threshold`` = 2/lr for GD).
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import jax
import ml_collections

from dynamics.registry import Registry

Batch = Mapping[str, Any]  # {"x": inputs, "y": targets}, arrays with a leading example axis.


@dataclasses.dataclass(frozen=True)
class ProbeContext:
    """What a probe may read; built once per run by the training loop.

    Attributes:
      loss_fn: ``loss_fn(params, batch) -> scalar`` mean loss over the batch (pure, jittable).
      apply_fn: ``apply_fn(params, x) -> outputs`` the model's forward pass.
      per_example_loss: ``per_example_loss(outputs, y) -> [batch]`` the configured loss.
      train: the whole training set as a batch (device arrays, sharded on the ``data`` axis).
      test: the whole test set as a batch, or None.
      num_classes: classes of a classification task, None for regression.
      learning_rate: the schedule, ``learning_rate(step) -> lr``.
      tx: the optimizer, an ``optax.GradientTransformationExtraArgs``.
      mesh: the device mesh with axes ``("data", "model")``.
      config: the whole run config.
    """

    loss_fn: Callable[..., Any]
    apply_fn: Callable[..., Any]
    per_example_loss: Callable[..., Any]
    train: Batch
    test: Batch | None
    num_classes: int | None
    learning_rate: Callable[[Any], Any]
    tx: Any
    mesh: Any
    config: ml_collections.ConfigDict


def probe_key(seed: int, name: str, step: int) -> jax.Array:
    """The PRNG key of probe ``name`` at ``step``: ``fold_in(fold_in(key(seed), crc32(name)),
    step)``, a pure function of the three, stable across Python processes and class renames.

    Example:
      >>> import jax
      >>> a, b = probe_key(0, "sharpness", 5), probe_key(0, "hessian_trace", 5)
      >>> bool((jax.random.key_data(a) != jax.random.key_data(b)).any())
      True
    """
    salt = zlib.crc32(name.encode())
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), salt), step)


class Probe:
    """Base class: subclasses implement ``__call__`` and, as needed, ``setup`` and ``init``.

    Attributes:
      name: the registry name (salts the probe's random stream, :func:`probe_key`).
      every: steps between two calls.
    """

    name: str = ""

    def __init__(self, every: int):
        if every <= 0:
            raise ValueError(f"probe every must be a positive number of steps, got {every}")
        self.every = every

    def due(self, step: int) -> bool:
        """Whether the probe runs at ``step`` (every ``every`` steps, step 0 included)."""
        return step % self.every == 0

    def next_due(self, step: int) -> int:
        """The first step after ``step`` at which the probe runs."""
        return (step // self.every + 1) * self.every

    def check(self, config: ml_collections.ConfigDict) -> None:
        """Raises ``ConfigError`` when the probe cannot run with this config (before any file is
        written); the default accepts every config."""
        del config

    def setup(self, ctx: ProbeContext) -> None:
        """Builds what the probe computes with (its jitted functions) from the run's context;
        called once, before the first call. The default needs nothing."""
        del ctx

    def key(self, ctx: ProbeContext, step: int) -> jax.Array:
        """This probe's PRNG key at ``step`` (:func:`probe_key` of the run's seed and ``name``)."""
        if not self.name:
            raise ValueError(f"{type(self).__name__}.name must be its registry name (the key salt)")
        return probe_key(ctx.config.seed, self.name, step)

    def init(self, ctx: ProbeContext, params: Any) -> Any:
        """Returns the probe's initial state (a pytree of arrays; ``{}`` when stateless)."""
        del ctx, params
        return {}

    def __call__(
        self, ctx: ProbeContext, step: int, params: Any, opt_state: Any, probe_state: Any
    ) -> tuple[dict[str, float], Any]:
        raise NotImplementedError


PROBES: Registry = Registry("probe")
