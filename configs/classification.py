"""Small classification runs: the runner's tests, its benchmark, and a first thing to try.

Presets (``--config=configs/classification.py:<preset>``):

* ``digits_mlp`` (default): scikit-learn digits, 64-64-64-10 tanh MLP, MSE on one-hot targets,
  full-batch gradient descent, lr 0.1.
* ``modular_mlp``: ``a + b mod 23`` on one-hot pairs (30% train), 46-128-23 ReLU MLP,
  cross-entropy, AdamW lr 1e-3, full batch.

Example:
  python -m experiments.run --config=configs/classification.py:modular_mlp --config.num_steps=200
"""

from dynamics.train.config import base_config


def get_config(arg: str | None = None):
    preset = arg or "digits_mlp"
    config = base_config()
    config.num_steps = 500
    config.log_every = 10
    config.eval_every = 50
    config.checkpoint_every = 100
    if preset == "digits_mlp":
        config.data.name = "digits"
        config.model.name = "mlp"
        config.model.widths = (64, 64)
        config.model.activation = "tanh"
        config.loss.name = "mse"
        config.optimizer.name = "sgd"
        config.optimizer.learning_rate = 0.1
    elif preset == "modular_mlp":
        config.data.name = "modular_arithmetic"
        config.data.p = 23
        config.data.train_fraction = 0.3
        config.model.name = "mlp"
        config.model.widths = (128,)
        config.model.activation = "relu"
        config.loss.name = "cross_entropy"
        config.optimizer.name = "adamw"
        config.optimizer.learning_rate = 1e-3
    else:
        raise ValueError(f"unknown preset {preset!r}; valid choices: digits_mlp, modular_mlp")
    return config
