"""A config of runs that take a few seconds, for the sweep and multi-process tests.

Presets:
* ``mixed`` (default): a good learning rate, one that diverges, and a run that fails when its
  dataset is built (more training examples than digits has), to check that neither stops a sweep.
* ``three``: three good learning rates (the Slurm test).
* ``one``: one good learning rate (the Slurm requeue test, which makes it long).

``get_config`` alone is the multi-process test's run: minibatches of 32, so with ``mesh.data=2``
each of two processes feeds 16 examples a step.
"""

from configs import _presets
from dynamics import sweep as sw
from dynamics.train.config import base_config

LR = "optimizer.learning_rate"
PRESETS = {"mixed": {}, "three": {}, "one": {}}


def get_config(arg=None):
    preset = _presets.parse_arg(arg, PRESETS, default="mixed", file=__file__)
    c = base_config()
    c.num_steps = 20
    c.log_every = 5
    c.probes.evaluation.every = 10
    c.checkpoint_every = 10
    c.data.name = "digits"
    c.data.num_train = 256
    c.data.batch_size = 32
    c.model.name = "mlp"
    c.model.widths = (16,)
    c.loss.name = "mse"
    c.optimizer.name = "sgd"
    c.optimizer.learning_rate = 0.1
    c.progress = False
    return _presets.apply(c, PRESETS[preset])


def get_sweep(arg=None):
    if (arg or "mixed") == "mixed":
        return sw.chain(
            sw.axis(LR, [0.1, 1e4]),
            [{LR: 0.2, "data.num_train": 100_000}],
        )
    if arg == "one":
        return sw.axis(LR, [0.1])
    return sw.axis(LR, [0.05, 0.1, 0.2])
