"""Update rules as optax transforms, one rule per module; :mod:`dynamics.optim.registry` is the
table that names them for configs (importing a rule registers nothing)."""

from dynamics.optim.adago import AdaGOState, adago, scale_by_adago
from dynamics.optim.adamuon import AdaMuonState, adamuon, scale_by_adamuon
from dynamics.optim.auon import auon, auon_hybrid, scale_by_auon
from dynamics.optim.conda import CondaState, conda, scale_by_conda
from dynamics.optim.constraints import (
    PowerIterationState,
    spectral_cap,
    spectral_hammer,
    spectral_normalize,
    spectral_weight_decay,
)
from dynamics.optim.filters import (
    GrokfastEmaState,
    GrokfastMaState,
    grokfast_ema,
    grokfast_ma,
    orthogonal_gradient,
)
from dynamics.optim.muon import MuonState, muon, scale_by_muon
from dynamics.optim.normuon import NorMuonState, normuon, scale_by_normuon
from dynamics.optim.orthogonalizers import newton_schulz, polar_express, svd_polar
from dynamics.optim.partition import default_labels, matrix_optimizer, with_fallback
from dynamics.optim.psgd_kron import KronState, kron, scale_by_kron
from dynamics.optim.registry import CONSTRAINTS, FILTERS, OPTIMIZERS, TABLE, Component
from dynamics.optim.scion import scale_by_scion, scion
from dynamics.optim.shampoo import ShampooState, scale_by_shampoo, shampoo
from dynamics.optim.sharpness_aware import (
    SharpnessAwareState,
    asam,
    gradient_norm_regularization,
    sam,
    scale_by_asam,
    scale_by_gradient_norm_regularization,
    scale_by_sam,
    scale_by_sharpness_aware,
)
from dynamics.optim.soap import DecayAfterStepState, SoapState, scale_by_soap, soap
from dynamics.optim.splus import SPlusState, scale_by_splus, splus, splus_eval_params

__all__ = [
    "AdaGOState",
    "AdaMuonState",
    "CONSTRAINTS",
    "Component",
    "CondaState",
    "DecayAfterStepState",
    "FILTERS",
    "GrokfastEmaState",
    "GrokfastMaState",
    "KronState",
    "MuonState",
    "NorMuonState",
    "OPTIMIZERS",
    "PowerIterationState",
    "SPlusState",
    "ShampooState",
    "SharpnessAwareState",
    "SoapState",
    "TABLE",
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
