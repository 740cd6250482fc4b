"""Scalar networks at the edge of stability (Kreisler et al. 2023), and a quadratic model (Agarwala
et al. 2023).

Scalar presets train ``f(x) = x * prod_i w_i`` (``scalar_network``) with full-batch GD on one datum
with loss ``0.5 (f - y)^2``. The datum is the ``synthetic`` dataset's one ``linear`` example for
``seed = 6``: ``x = 1.0531``, ``y = 1.8709`` (``y/x = 1.7765``); the weights are placed relative to
it in :func:`get_config`, so change the datum through the preset, not ``--config.seed``.
The ``scalar_gfs`` analysis re-runs the GD in float64 and computes the gradient-flow-solution
(GFS) sharpness at every step (``dynamics.analysis.scalar``): the largest step-to-step increase,
the final GFS sharpness against ``2/lr``, an RK4 gradient-flow and a Lanczos cross-check.

* ``depth2``, ``depth4`` (default), ``depth8``: inside the theorem's assumptions. Positive weights
  spread geometrically with product ``y/x`` (a minimum of sharpness ``S_min``), perturbed by about
  1%, and ``lr = 2 / ((S_min + S_flat)/2)``: ``2/lr`` lies between the flattest minimum's sharpness
  ``S_flat = D y^2 |y/x|^(-2/D)`` and the initial GFS sharpness. GD then decreases the GFS
  sharpness monotonically and converges just below ``2/lr``.
* ``sign_flip``: outside the assumptions. Depth 2 from ``w = (2.7, 2.3)`` with ``lr = 0.38``:
  the first step overshoots so far that both weights change sign (the residual is large, so
  ``lr * r * x * w_j > w_i``); the conserved quantity ``w_1^2 - w_2^2`` jumps from 2.00 to -4.98,
  and with it the GF solution moves to a much less balanced, sharper minimum: the GFS sharpness
  rises from 4.52 to 6.79 in one step. The theorem's proof needs the GD step to keep the weights
  on the same side of zero (its step-size assumption), which fails here.
* ``quadratic``: the second-order regression model ``z = G theta + 1/2 theta^T Q theta``
  (``quadratic``, epsilon 0.5, 60 parameters) on the 20 Gaussian inputs and linear-teacher
  targets of ``synthetic`` (the model mixes the per-coordinate quadratics linearly; one-hot
  inputs would be the paper's exact form); full-batch GD at lr 0.4 with the ``sharpness`` probe
  and the ``edge_of_stability`` analysis. Measured: sharpness 4.21 at init rises past
  2/lr = 5 by step 20 (progressive sharpening), overshoots to 5.26 twice with loss spikes, and
  settles at 0.99 x 2/lr while the loss falls to 1e-7. (At lr 1 the initial sharpness is already
  above 2/lr and GD diverges.)

Example:
  python -m experiments.run --config=configs/scalar_eos.py:depth8
"""

import numpy as np

from configs import _presets
from dynamics.train.config import base_config

SEED = 6
X, Y = 1.053115725517273, 1.870850920677185  # synthetic(seed=6, kind="linear", 1 example)


def near_sharp_minimum(depth: int) -> tuple[tuple[float, ...], float]:
    """Initial weights (1% off a sharp minimum) and an lr with ``S_flat < 2/lr < S_min``."""
    spread = np.geomspace(1.6, 0.7, depth)
    base = spread * (Y / X / np.prod(spread)) ** (1.0 / depth)
    s_min = Y**2 * np.sum(1.0 / base**2)
    s_flat = depth * Y**2 * abs(Y / X) ** (-2.0 / depth)
    lr = 2.0 / (0.5 * (s_min + s_flat))
    w0 = base * (1.0 + 0.01 * np.cos(np.arange(depth)))
    return tuple(float(w) for w in w0), float(lr)


def _depth(depth: int) -> dict:
    w0, lr = near_sharp_minimum(depth)
    return {"model.depth": depth, "model.init_weights": w0, "optimizer.learning_rate": lr}


# Each preset's changes to the scalar network of the body.
PRESETS = {
    "depth2": _depth(2),
    "depth4": _depth(4),
    "depth8": _depth(8),
    "sign_flip": {
        "num_steps": 2000,
        "model.depth": 2,
        "model.init_weights": (2.7, 2.3),
        "optimizer.learning_rate": 0.38,
    },
    "quadratic": {
        "seed": 0,
        "data.num_train": 20,
        "data.input_dim": 20,
        "model": dict(name="quadratic", num_params=60, epsilon=0.5, coeff_seed=3),
        "optimizer.learning_rate": 0.4,
        "probes.sharpness": dict(every=20),
        "analysis.name": "edge_of_stability",
    },
}


def get_config(arg: str | None = None):
    preset = _presets.parse_arg(arg, PRESETS, default="depth4", file=__file__)
    config = base_config()
    config.seed = SEED
    config.num_steps = 3000
    config.log_every = 1
    config.probes.evaluation.every = 0
    config.checkpoint_every = 0
    config.precision = "float64"
    config.data.name = "synthetic"
    config.data.update(kind="linear", num_train=1, num_test=0, input_dim=1, output_dim=1)
    config.model.name = "scalar_network"
    config.loss.name = "mse"
    config.optimizer.name = "sgd"
    config.analysis.name = "scalar_gfs"
    return _presets.apply(config, PRESETS[preset])


def get_sweep(arg: str | None = None):
    """Depths 2 to 10 inside the assumptions (each with its own weights and lr); for
    ``sign_flip`` and ``quadratic``, learning rates."""
    if arg == "sign_flip":
        return [{"optimizer.learning_rate": lr} for lr in (0.3, 0.38, 0.44)]
    if arg == "quadratic":
        return [{"optimizer.learning_rate": lr} for lr in (0.3, 0.4, 0.45)]
    runs = []
    for depth in range(2, 11):
        w0, lr = near_sharp_minimum(depth)
        runs.append(
            {
                "model.depth": depth,
                "model.init_weights": w0,
                "optimizer.learning_rate": lr,
            }
        )
    return runs
