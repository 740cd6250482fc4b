"""Grokking on modular arithmetic: late generalization, and what removes the delay.

Presets (``--config=configs/grokking.py:<preset>``):

* ``mlp`` (default, = ``mlp_wd``): Prieto et al. 2025, "Grokking at the edge of numerical
  stability": ``a + b mod 113`` on one-hot pairs (226 inputs), 40% train, MLP 226-200-200-113
  ReLU without biases, cross-entropy, full batch, AdamW lr 5e-3, b2 0.99, eps 1e-25.
  ``mlp_<arm>`` picks an arm (below); ``get_sweep("mlp")`` runs them all.
* ``nanda``: Nanda et al. 2023, "Progress measures for grokking via mechanistic
  interpretability": ``a + b mod 113`` as tokens, 30% train, 1-layer transformer (d 128, 4 heads,
  d_mlp 512, ReLU, no LayerNorm), AdamW lr 1e-3, wd 1, betas (0.9, 0.98), full batch; the paper
  sees grokking within its 50k-epoch budget (``scripts/nanda_grokking.py``).
* ``grokfast`` (= ``grokfast_ema``), ``grokfast_baseline``, ``grokfast_ma``: Lee et al. 2024,
  "Grokfast: Accelerated Grokking by Amplifying Slow Gradients", pinned to their reference code:
  ``x * y mod 97`` with ``y`` in 1..96 (9,312 pairs), 50% train, tokens ``[x, op, y, =]``, 2-layer
  transformer d 128, 4 heads, GELU MLP x4, the reference block ``h = LN1(h); h = h + Attn(h);
  h = h + MLP(LN2(h))``, PyTorch default inits, head over the whole vocabulary, torch Adam with
  *coupled* L2, lr 1e-3 with a 10-step linear warm-up, betas (0.9, 0.98), batch 512. Arms:
  EMA (alpha 0.98, lamb 2, wd 0.005), MA (window 100, lamb 5, wd 0.01), baseline (no filter,
  wd 0). The long runs are ``scripts/grokfast_reproduction.py``.

Arms of the MLP (the overrides in ``ARMS``; filters use their registry defaults, which are the
papers' settings): ``baseline`` (no weight decay), ``wd`` (weight decay 1), ``grokfast_ema`` and
``grokfast_ma`` (with weight decay 1), ``stablemax`` (StableMax cross-entropy in float64, no
weight decay), ``orthograd`` (⊥Grad, no weight decay). Any registry optimizer:
``--config.optimizer.name=...`` (its keyword fields must match).

Logged by the ``evaluation`` and ``grokking`` probes: train/test accuracy and loss, softmax
collapse fraction, zero-loss fraction, cos(grad, w), weight norm, max logit. The ``grokking``
analysis writes steps to 99% train / 95% test accuracy and their delay to ``summary.json``.

Example:
  python -m experiments.run --config=configs/grokking.py:mlp_orthograd --config.num_steps=1000
  python -m experiments.sweep --config=configs/grokking.py:mlp
"""

from configs import _presets
from dynamics.train.config import base_config

WD = "optimizer.weight_decay"
FILTER = "optimizer.filter.name"


def _cadence(every: int) -> dict:
    return {
        "log_every": every,
        "probes.evaluation.every": every,
        "probes.grokking": dict(every=every),
    }


_WIDTHS = dict(d_model=128, num_heads=4, d_mlp=512)  # both transformers
# The setup of each family, as changes to the body.
FAMILIES = {
    "mlp": {
        "num_steps": 3000,
        **_cadence(25),
        "data.p": 113,
        "data.op": "+",
        "data.train_fraction": 0.4,
        "data.encoding": "one_hot",
        "model": dict(name="mlp", widths=(200, 200), activation="relu", use_bias=False),
        "optimizer.learning_rate": 5e-3,
        "optimizer.b1": 0.9,
        "optimizer.b2": 0.99,
        "optimizer.eps": 1e-25,
        WD: 1.0,
    },
    "nanda": {
        "num_steps": 30000,
        **_cadence(250),
        "data.p": 113,
        "data.op": "+",
        "data.train_fraction": 0.3,
        "data.encoding": "tokens",
        "model": dict(
            name="transformer", num_layers=1, **_WIDTHS, layer_norm="none", activation="relu"
        ),
        "optimizer.learning_rate": 1e-3,
        "optimizer.b1": 0.9,
        "optimizer.b2": 0.98,
        WD: 1.0,
    },
    "grokfast": {
        "num_steps": 5000,
        **_cadence(50),
        "data.p": 97,
        "data.op": "*",
        "data.train_fraction": 0.5,
        "data.encoding": "tokens",
        "data.nonzero_b": True,
        "data.batch_size": 512,
        "model": dict(
            name="transformer",
            num_layers=2,
            **_WIDTHS,
            layer_norm="grokfast",
            activation="gelu",
            init="torch",
            predict_vocab=True,
        ),
        "optimizer.name": "adam",  # torch.optim.Adam: weight decay is coupled L2.
        "optimizer.learning_rate": 1e-3,
        "optimizer.b1": 0.9,
        "optimizer.b2": 0.98,
        WD: 0.0,
        "optimizer.schedule.name": "linear_warmup",
        "optimizer.schedule.warmup_steps": 10,
    },
}
ARMS = {
    "mlp": {
        "baseline": {WD: 0.0},
        "wd": {WD: 1.0},
        "grokfast_ema": {FILTER: "grokfast_ema", WD: 1.0},
        "grokfast_ma": {FILTER: "grokfast_ma", WD: 1.0},
        "stablemax": {"loss.name": "stablemax_cross_entropy", "precision": "float64", WD: 0.0},
        "orthograd": {FILTER: "orthogonal_gradient", WD: 0.0},
    },
    "grokfast": {
        "ema": {FILTER: "grokfast_ema", WD: 0.005},
        "ma": {FILTER: "grokfast_ma", WD: 0.01},
        "baseline": {WD: 0.0},
    },
}


def _arm(family: str, arm: str) -> dict:
    return {**FAMILIES[family], **ARMS[family][arm], "analysis.label": arm}


# ``mlp`` is ``mlp_wd`` and ``grokfast`` is ``grokfast_ema``.
PRESETS = {
    "mlp": _arm("mlp", "wd"),
    "nanda": FAMILIES["nanda"],
    "grokfast": _arm("grokfast", "ema"),
    **{f"{family}_{arm}": _arm(family, arm) for family, arms in ARMS.items() for arm in arms},
}


def get_config(arg: str | None = None):
    preset = _presets.parse_arg(arg, PRESETS, default="mlp", file=__file__)
    config = base_config()
    config.checkpoint_every = 0
    config.data.name = "modular_arithmetic"
    config.loss.name = "cross_entropy"
    config.optimizer.name = "adamw"
    config.analysis.name = "grokking"
    return _presets.apply(config, PRESETS[preset])


def get_sweep(arg: str | None = None):
    """The arms of the preset's family (``mlp`` or ``grokfast``), or seeds for ``nanda``."""
    family = (arg or "mlp").partition("_")[0]
    if family in ARMS:
        return [dict(overrides) for overrides in ARMS[family].values()]
    return [{"seed": s} for s in range(4)]
