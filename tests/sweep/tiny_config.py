"""A config of runs that take a few seconds, for the sweep and multi-process tests.

Presets:
* ``mixed`` (default): a good learning rate, one that diverges, and a run that fails when its
  dataset is built (more training examples than digits has), to check that neither stops a sweep.
* ``three``: three good learning rates (the Slurm test).

``get_config`` alone is the multi-process test's run: minibatches of 32, so with ``mesh.data=2``
each of two processes feeds 16 examples a step.
"""

from dynamics import sweep as sw
from dynamics.train.config import base_config

LR = "optimizer.learning_rate"


def get_config(arg=None):
    c = base_config()
    c.num_steps = 20
    c.log_every = 5
    c.eval_every = 10
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
    return c


def get_sweep(arg=None):
    preset = arg or "mixed"
    if preset == "mixed":
        return sw.chain(
            sw.axis(LR, [0.1, 1e4]),
            [{LR: 0.2, "data.num_train": 100_000}],
        )
    if preset == "three":
        return sw.axis(LR, [0.05, 0.1, 0.2])
    raise ValueError(f"unknown preset {preset!r}; valid choices: mixed, three")
