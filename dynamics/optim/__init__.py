"""Update rules as optax transforms; importing this package registers them all by name."""

from dynamics.optim.conda import conda, scale_by_conda
from dynamics.optim.constraints import (
    spectral_cap,
    spectral_hammer,
    spectral_normalize,
    spectral_weight_decay,
)
from dynamics.optim.filters import grokfast_ema, grokfast_ma, orthogonal_gradient
from dynamics.optim.kron import kron, scale_by_kron
from dynamics.optim.orthogonal import (
    adago,
    adamuon,
    auon,
    auon_hybrid,
    muon,
    normuon,
    scale_by_adago,
    scale_by_adamuon,
    scale_by_auon,
    scale_by_muon,
    scale_by_normuon,
)
from dynamics.optim.orthogonalize import newton_schulz, polar_express, svd_polar
from dynamics.optim.partition import default_labels, matrix_optimizer, with_fallback
from dynamics.optim.registry import CONSTRAINTS, FILTERS, OPTIMIZERS
from dynamics.optim.scion import scale_by_scion, scion
from dynamics.optim.shampoo import scale_by_shampoo, shampoo
from dynamics.optim.sharpness_aware import (
    asam,
    gradient_norm_regularization,
    sam,
    scale_by_asam,
    scale_by_gradient_norm_regularization,
    scale_by_sam,
    scale_by_sharpness_aware,
)
from dynamics.optim.soap import scale_by_soap, soap
from dynamics.optim.splus import scale_by_splus, splus, splus_eval_params

__all__ = [
    "CONSTRAINTS",
    "FILTERS",
    "OPTIMIZERS",
    "adago",
    "adamuon",
    "asam",
    "auon",
    "auon_hybrid",
    "conda",
    "default_labels",
    "gradient_norm_regularization",
    "grokfast_ema",
    "grokfast_ma",
    "kron",
    "matrix_optimizer",
    "muon",
    "newton_schulz",
    "normuon",
    "orthogonal_gradient",
    "polar_express",
    "sam",
    "scale_by_adago",
    "scale_by_adamuon",
    "scale_by_asam",
    "scale_by_auon",
    "scale_by_conda",
    "scale_by_gradient_norm_regularization",
    "scale_by_kron",
    "scale_by_muon",
    "scale_by_normuon",
    "scale_by_sam",
    "scale_by_scion",
    "scale_by_shampoo",
    "scale_by_sharpness_aware",
    "scale_by_soap",
    "scale_by_splus",
    "scion",
    "shampoo",
    "soap",
    "spectral_cap",
    "spectral_hammer",
    "spectral_normalize",
    "spectral_weight_decay",
    "splus",
    "splus_eval_params",
    "svd_polar",
    "with_fallback",
]
