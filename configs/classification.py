"""Small classification runs: the runner's tests, its benchmark, and a first thing to try.

Presets (``--config=configs/classification.py:<preset>``):

* ``digits_mlp`` (default): scikit-learn digits, 64-64-64-10 tanh MLP, MSE on one-hot targets,
  full-batch gradient descent, lr 0.1.
* ``modular_mlp``: ``a + b mod 23`` on one-hot pairs (30% train), 46-128-23 ReLU MLP,
  cross-entropy, AdamW lr 1e-3, full batch.

Example:
  python -m experiments.run --config=configs/classification.py:modular_mlp --config.num_steps=200
"""

from configs import _presets
from dynamics.train.config import base_config

PRESETS = {
    "digits_mlp": {
        "data.name": "digits",
        "model": dict(name="mlp", widths=(64, 64), activation="tanh"),
        "loss.name": "mse",
        "optimizer.name": "sgd",
        "optimizer.learning_rate": 0.1,
    },
    "modular_mlp": {
        "data.name": "modular_arithmetic",
        "data.p": 23,
        "data.train_fraction": 0.3,
        "model": dict(name="mlp", widths=(128,), activation="relu"),
        "loss.name": "cross_entropy",
        "optimizer.name": "adamw",
        "optimizer.learning_rate": 1e-3,
    },
}


def get_config(arg: str | None = None):
    preset = _presets.parse_arg(arg, PRESETS, default="digits_mlp", file=__file__)
    config = base_config()
    config.num_steps = 500
    config.log_every = 10
    config.probes.evaluation.every = 50
    config.checkpoint_every = 100
    return _presets.apply(config, PRESETS[preset])
