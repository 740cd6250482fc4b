"""The edge of stochastic stability: minibatch SGD's batch sharpness hovers at 2/lr.

Andreyev & Beneventano (2024) show that under minibatch SGD what stabilizes at 2/lr is the
*batch sharpness* E_B[g_B^T H_B g_B / ||g_B||^2] (the curvature of minibatch losses along their
own gradients), while the full-batch lambda_max settles below it, lower for smaller batches; at
full batch both reduce to gradient descent's edge of stability (Cohen et al. 2021). This config
runs plain SGD with one learning rate at a chosen batch size and logs batch sharpness (fresh
minibatches of the training size), lambda_max of the whole training set, and SGD's trace condition
(tr(H) <= 2/lr, ||H||_F <= O(sqrt(B)/lr)).

The task is one a network must memorize, so that every batch size keeps training long enough to
reach its edge (the authors warn that runs which converge first never do): Gaussian inputs with
random labels, a tanh MLP, MSE. The measured numbers are in ``docs/experiments.md``.

Presets (``--config=configs/stochastic_eos.py:<batch>``): ``full`` (default), or a batch size
``8``, ``16``, ``32``, ``64``, ``128``, ``256``. ``get_sweep()`` runs them all.

Example:
  python -m experiments.run --config=configs/stochastic_eos.py:16 --workdir=runs/eoss_b16
"""

from configs import _presets
from dynamics import sweep as sw
from dynamics.train.config import base_config

LEARNING_RATE = 0.3
PROBE_EVERY = 100
PRESETS = {"full": {}, **{str(b): {"data.batch_size": b} for b in (8, 16, 32, 64, 128, 256)}}


def get_config(arg: str | None = None):
    preset = _presets.parse_arg(arg, PRESETS, default="full", file=__file__)
    config = base_config()
    config.seed = 0
    config.num_steps = 5000
    config.log_every = 10
    config.probes.evaluation.every = 500
    config.checkpoint_every = 0
    config.data.name = "synthetic"
    config.data.update(kind="random_labels", num_train=1024, num_test=0, input_dim=32)
    config.data.batch_size = None
    config.model.update(widths=(128, 128), activation="tanh")
    config.loss.name = "mse"
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = LEARNING_RATE
    config.probes.sharpness = dict(every=PROBE_EVERY, k=1, num_iters=20)
    config.probes.batch_sharpness = dict(every=PROBE_EVERY, num_batches=256)
    config.probes.trace_condition = dict(every=PROBE_EVERY, num_probes=10)
    return _presets.apply(config, PRESETS[preset])


def get_sweep(arg: str | None = None):
    del arg
    return sw.axis("data.batch_size", [None, 8, 16, 32, 64, 128, 256])
