"""First probes: full-dataset loss and accuracy, and per-layer weight norms.

* ``evaluation(every)``: ``train_loss``, ``test_loss`` (mean per-example loss over the whole
  split) and, for classification, ``train_accuracy``, ``test_accuracy``. The runner adds it with
  ``every = eval_every`` unless the config lists it.
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

    def __init__(self, every: int):
        super().__init__(every)
        self._evaluate = None

    def _build(self, ctx: ProbeContext):
        classify = ctx.num_classes is not None

        def evaluate_split(params, batch):
            outputs = ctx.apply_fn(params, batch["x"])
            loss = jnp.mean(ctx.per_example_loss(outputs, batch["y"]))
            metrics = {"loss": loss}
            if classify:
                metrics["accuracy"] = jnp.mean(accuracy(outputs, batch["y"]).astype(loss.dtype))
            return metrics

        def evaluate(params, splits):
            # Both splits in one program: one compilation instead of one per split shape.
            return {
                f"{split}_{name}": value
                for split, batch in splits.items()
                for name, value in evaluate_split(params, batch).items()
            }

        return jax.jit(evaluate)

    def __call__(self, ctx, step, params, opt_state, probe_state):
        if self._evaluate is None:
            self._evaluate = self._build(ctx)
        splits = {"train": ctx.train}
        if ctx.test is not None:
            splits["test"] = ctx.test
        return self._evaluate(params, splits), probe_state


def _leaf_name(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)


class WeightNorms(Probe):
    """Frobenius norm of every parameter leaf."""

    def __init__(self, every: int):
        super().__init__(every)
        self._norms = jax.jit(lambda params: jax.tree.map(jnp.linalg.norm, params))

    def __call__(self, ctx, step, params, opt_state, probe_state):
        norms = jax.tree_util.tree_flatten_with_path(self._norms(params))[0]
        return {f"weight_norm/{_leaf_name(path)}": value for path, value in norms}, probe_state


@PROBES.register("evaluation")
def evaluation(every: int) -> Evaluation:
    return Evaluation(every)


@PROBES.register("weight_norms")
def weight_norms(every: int) -> WeightNorms:
    return WeightNorms(every)
