"""Edge of stability under full-batch gradient descent (Cohen et al. 2021).

Full-batch GD on MSE ``0.5 * sum_k (f_k - onehot(y)_k)^2`` (mean over examples); the ``sharpness``
probe measures the top Hessian eigenvalue of the whole training set every ``probe_every`` steps by
warm-started Lanczos and logs it with its stability threshold. Sharpness rises (progressive
sharpening) to the threshold and hovers there while the loss keeps falling non-monotonically.

Presets (``--config=configs/edge_of_stability.py:<preset>``):

* ``digits`` (default, the README's front door): scikit-learn digits (standardized),
  64-200-200-10 tanh MLP, lr 0.1 (2/lr = 20), 3,000 steps, top-2 Hessian eigenvalues every 50.
  The initial sharpness is ~16.8; at lr 0.1 it passes 0.95 x 2/lr at step 550, reaches 2/lr near
  step 700 and hovers within +6% of it for the remaining ~2,300 steps while the loss spikes and
  keeps falling. (At lr 0.08, 2/lr = 25, it needs ~2,600 steps to get there: the run ends while
  it is still arriving.)
* ``cifar5k``: Cohen et al.'s reference setup: the first 5,000 CIFAR-10 training images (pixels /
  255, standardized per feature), 3072-200-200-10 tanh MLP, lr 0.01 (2/lr = 200), stop at 99%
  train accuracy. Needs ``--config.data.path=DIR`` with the CIFAR-10 python batches.
* ``momentum``: digits with heavy-ball momentum 0.9, lr 0.19: threshold (2 + 2b)/lr = 20.
* ``sam``: digits with *unnormalized* SAM (``w <- w - lr grad L(w + rho grad L(w))``), rho 0.01,
  lr 0.1: its own threshold ``lambda (1 + rho lambda) lr = 2``, i.e. 17.1 instead of GD's 20
  ("SAM operates far from home", Agarwala & Dauphin 2023).
* ``cnn``: digits as 8x8 images, a tanh CNN (16, 16 channels, average pooling, dense 64), lr 0.2
  (2/lr = 10; initial sharpness 6.6): 0.95 x 2/lr at step 300, then within +-10% (lr 0.1: at step
  1,200). At lr 0.05 (2/lr = 40) the sharpness had only risen to 10.6 by step 1,300.

``get_sweep(preset)`` runs the preset at several learning rates; ``scripts`` and the docs combine
them into one figure with a 2/lr line per run.

The ``edge_of_stability`` analysis writes to ``summary.json``: the first step with sharpness >= 0.95
x threshold, the fraction of later measurements within +-10%, the largest overshoot and whether the
loss kept falling over long windows while it went up locally; the figure is
``plots/edge_of_stability.png``.

Example:
  python -m experiments.run --config=configs/edge_of_stability.py:digits
"""

from configs import _presets
from dynamics import sweep as sw
from dynamics.train.config import base_config

LR = "optimizer.learning_rate"
# Each preset's changes to the digits MLP of the body (the default).
PRESETS = {
    "digits": {},
    "cifar5k": {
        "num_steps": 20000,
        "log_every": 10,
        "data.name": "cifar10",
        "data.path": "",
        "data.num_train": 5000,
        "data.num_test": 0,
        LR: 0.01,
        "probes.sharpness.every": 100,
        "stop.train_accuracy": 0.99,
    },
    "momentum": {"optimizer.name": "momentum", LR: 0.19, "optimizer.momentum": 0.9},
    "sam": {"optimizer.name": "sam", "optimizer.rho": 0.01, "optimizer.base": "sgd",
            "optimizer.normalize": False},
    "cnn": {
        "data.flatten": False,
        "model": dict(name="cnn", channels=(16, 16), dense=(64,), activation="tanh", pool="avg"),
        LR: 0.2,
    },
}  # fmt: skip


def get_config(arg: str | None = None):
    preset = _presets.parse_arg(arg, PRESETS, default="digits", file=__file__)
    config = base_config()
    config.seed = 0
    config.num_steps = 3000
    config.log_every = 1  # period-2 oscillations of the loss are invisible at even intervals
    config.probes.evaluation.every = 250
    config.checkpoint_every = 0
    config.data.name = "digits"
    config.model.name = "mlp"
    config.model.update(widths=(200, 200), activation="tanh")
    config.loss.name = "mse"
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.1
    config.probes.sharpness = dict(every=50)
    config.analysis.name = "edge_of_stability"
    config.analysis.metric = "sharpness"
    return _presets.apply(config, PRESETS[preset])


def get_sweep(arg: str | None = None):
    """Learning rates whose thresholds the preset's sharpness reaches within its budget."""
    preset = arg or "digits"
    lrs = {
        "digits": [0.06, 0.08, 0.1],
        "cifar5k": [2 / 400, 0.01, 2 / 100],
        "momentum": [0.15, 0.19],
        "sam": [0.08, 0.1],
        "cnn": [0.1, 0.2],
    }[preset]
    return sw.axis(LR, lrs)
