"""Update rules as optax transforms; importing this package registers them all by name."""

from dynamics.optim.filters import grokfast_ema, grokfast_ma, orthogonal_gradient
from dynamics.optim.registry import CONSTRAINTS, FILTERS, OPTIMIZERS
from dynamics.optim.sharpness_aware import (
    asam,
    gradient_norm_regularization,
    sam,
    scale_by_asam,
    scale_by_gradient_norm_regularization,
    scale_by_sam,
    scale_by_sharpness_aware,
)
