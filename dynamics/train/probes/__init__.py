"""Probes: metrics computed every N steps; importing this package registers them all."""

from dynamics.train.probes import curvature, evaluation, grokking  # noqa: F401  (registration)
from dynamics.train.probes.base import PROBES, Probe, ProbeContext

__all__ = ["PROBES", "Probe", "ProbeContext"]
