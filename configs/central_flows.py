"""Central flows (Cohen et al. 2025): the discrete optimizer, its central flow and its stable flow.

From one initialization, three processes run side by side for ``num_steps`` optimizer steps:
full-batch gradient descent (or RMSProp), its *central flow* (``dynamics.flows.central``: the
ODE of the time-averaged trajectory, with the oscillation covariance set by a complementarity
problem at every substep) and its *stable flow* (the optimizer's ODE without oscillation,
integrated by diffrax). ``metrics.jsonl`` has one record per step with each process's loss and
(effective) sharpness, the central flow's predicted time-averaged loss, edge eigenvalues and
oscillation variances, and the distances between the processes; ``summary.json``'s ``analysis``
has the acceptance numbers of ``dynamics.flows.experiment.analyze``; the figure is
``plots/central_flows.png``. ``program = "central_flows"`` makes ``experiments.run`` call
``dynamics.flows.experiment.run`` instead of the train loop.

* ``gd_digits`` (default): scikit-learn digits (512 training examples, standardized), a
  64-32-32-10 tanh MLP, MSE, float64, GD at lr 0.4 (2/lr = 5) for 1,000 steps. The initial
  sharpness is already 2 x 2/lr, so the correction is on from step 1. Measured: predicted loss
  within a median 2.7% of GD's 20-step mean (stable flow 15.7%), up to 3 eigenvalues at the edge.
* ``rmsprop_digits``: the same with RMSProp (decay 0.9, eps 1e-8, nu starting at grad L^2) at
  lr 0.004, starting at 2.8 x 2/lr. Measured: the flow's effective sharpness of P^-1/2 H P^-1/2
  at 2/lr (median deviation 4e-4; all k = 6 tracked at the edge at some point, so raise
  ``flows.k`` for more), predicted loss 7.3% from RMSProp's smoothed loss (stable flow 18.8%
  until it stops at step 81).
* ``gd_gaussian``: the setting of the acceptance tests (``tests/flows/test_flows_acceptance.py``):
  128 Gaussian inputs in 8 dimensions with random +-1 targets (``synthetic``, kind
  ``random_signs``), an 8-16-16-1 tanh MLP, half-MSE, float64, GD at lr 0.25 (2/lr = 8).
* ``rmsprop_gaussian``: the same with RMSProp at lr 0.003. RMSProp presets track k = 6
  eigenpairs: five effective eigenvalues reach 2/lr at once here (k = 4 was full).

``flows`` fields: ``k`` eigenpairs tracked (the most at the edge at once), ``num_iters`` Lanczos
products per call (warm-started), ``dt`` the central flow's substep (in steps), ``band`` the edge
band (eigenvalues above (1 - band) 2/lr), ``solver_iters`` complementarity iterations per
substep, ``smoothing`` the window of GD's smoothed loss, ``max_sharpness`` when the stable flow
stops (its effective sharpness above this many times 2/lr).

Example:
  python -m experiments.run --config=configs/central_flows.py:gd_digits
"""

from configs import _presets
from dynamics.train.config import base_config

_GAUSSIAN = {
    "data": dict(
        name="synthetic", batch_size=None, kind="random_signs", num_train=128, num_test=0,
        input_dim=8, output_dim=1,
    ),
    "model.widths": (16, 16),
    "optimizer.learning_rate": 0.25,
}  # fmt: skip
# RMSProp tracks k = 6 eigenpairs: five effective eigenvalues reach the edge at once on
# rmsprop_gaussian (k = 4 was full).
_RMSPROP = {
    "optimizer.name": "rmsprop",
    "optimizer.decay": 0.9,
    "optimizer.eps": 1e-8,
    "flows.k": 6,
}

PRESETS = {
    "gd_digits": {},
    "rmsprop_digits": {**_RMSPROP, "optimizer.learning_rate": 0.004},
    "gd_gaussian": _GAUSSIAN,
    "rmsprop_gaussian": {**_GAUSSIAN, **_RMSPROP, "optimizer.learning_rate": 0.003},
}


def get_config(arg: str | None = None):
    preset = _presets.parse_arg(arg, PRESETS, default="gd_digits", file=__file__)
    config = base_config()
    config.program = "central_flows"
    config.num_steps = 1000
    config.log_every = 1
    config.probes.evaluation.every = 0
    config.checkpoint_every = 0
    config.precision = "float64"
    config.data.name = "digits"
    config.data.num_train = 512
    config.model.name = "mlp"
    config.model.update(widths=(32, 32), activation="tanh")
    config.loss.name = "mse"
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.4
    config.flows = dict(
        k=4, num_iters=12, dt=0.5, band=0.1, solver_iters=60, smoothing=20, max_sharpness=20.0
    )
    return _presets.apply(config, PRESETS[preset])
