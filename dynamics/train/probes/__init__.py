"""Probes: metrics computed every N steps; importing this package registers them all."""

from dynamics.train.probes import (  # noqa: F401  (registration)
    curvature,
    evaluation,
    grokking,
    minibatch,
    spectral_norms,
)
from dynamics.train.probes.base import PROBES, Probe, ProbeContext

__all__ = ["PROBES", "Probe", "ProbeContext"]
