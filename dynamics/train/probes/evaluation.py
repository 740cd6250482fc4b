"""First probes: full-dataset loss and accuracy, and per-layer weight norms.

* ``evaluation(every, batch_size=None)``: ``train_loss``, ``test_loss`` (mean per-example loss
  over the whole split) and, for classification, ``train_accuracy``, ``test_accuracy``. With a
  ``batch_size`` the forward passes run over chunks of that many examples (``lax.map``, then the
  remainder), summed and divided by the split size, so a large split never needs all its
  activations at once; the result is the same mean. Every run has it
  (``probes.evaluation.every``, default 100; 0: only at step 0 and at the end).
* ``weight_norms(every)``: ``weight_norm/<layer>/<leaf>`` = ``||W||_F`` of every parameter leaf
  (e.g. ``weight_norm/Dense_0/kernel``), to follow weight growth (e.g. under weight decay or
  softmax collapse, Prieto et al. 2025).

Example (config):
  >>> import ml_collections
  >>> probes = ml_collections.ConfigDict({"weight_norms": {"every": 100}})
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dynamics.losses import accuracy
from dynamics.train.probes.base import PROBES, Probe, ProbeContext


class Evaluation(Probe):
    """Mean loss and accuracy over the whole training and test sets."""

    name = "evaluation"

    def __init__(self, every: int, batch_size: int | None = None):
        super().__init__(every)
        if batch_size is not None and batch_size <= 0:
            raise ValueError(f"evaluation batch_size must be positive, got {batch_size}")
        self.batch_size = batch_size
        self._evaluate = None

    def setup(self, ctx: ProbeContext):
        classify = ctx.num_classes is not None

        def sums(params, batch):
            outputs = ctx.apply_fn(params, batch["x"])
            loss = ctx.per_example_loss(outputs, batch["y"])
            totals = {"loss": jnp.sum(loss)}
            if classify:
                totals["accuracy"] = jnp.sum(accuracy(outputs, batch["y"]).astype(loss.dtype))
            return totals

        def evaluate_split(params, batch):
            n = batch["y"].shape[0]
            size = self.batch_size
            if not size or n <= size:
                totals = sums(params, batch)
            else:
                k = n // size
                chunks = jax.tree.map(lambda a: a[: k * size].reshape(k, size, *a.shape[1:]), batch)
                totals = jax.tree.map(
                    lambda s: jnp.sum(s, axis=0), jax.lax.map(lambda b: sums(params, b), chunks)
                )
                if n % size:
                    rest = sums(params, jax.tree.map(lambda a: a[k * size :], batch))
                    totals = jax.tree.map(jnp.add, totals, rest)
            return {name: total / n for name, total in totals.items()}

        def evaluate(params, splits):
            # Both splits in one program: one compilation instead of one per split shape.
            return {
                f"{split}_{name}": value
                for split, batch in splits.items()
                for name, value in evaluate_split(params, batch).items()
            }

        self._evaluate = jax.jit(evaluate)

    def __call__(self, ctx, step, params, opt_state, probe_state):
        splits = {"train": ctx.train}
        if ctx.test is not None:
            splits["test"] = ctx.test
        return self._evaluate(params, splits), probe_state


def _leaf_name(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)


class WeightNorms(Probe):
    """Frobenius norm of every parameter leaf."""

    name = "weight_norms"

    def __init__(self, every: int):
        super().__init__(every)
        self._norms = jax.jit(lambda params: jax.tree.map(jnp.linalg.norm, params))

    def __call__(self, ctx, step, params, opt_state, probe_state):
        norms = jax.tree_util.tree_flatten_with_path(self._norms(params))[0]
        return {f"weight_norm/{_leaf_name(path)}": value for path, value in norms}, probe_state


@PROBES.register(Evaluation.name)
def evaluation(every: int, batch_size: int | None = None) -> Evaluation:
    return Evaluation(every, batch_size)


@PROBES.register(WeightNorms.name)
def weight_norms(every: int) -> WeightNorms:
    return WeightNorms(every)
