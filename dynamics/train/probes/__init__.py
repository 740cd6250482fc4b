"""Probes: metrics computed every N steps; importing this package registers them all."""

from dynamics.train.probes.base import PROBES, Probe, ProbeContext
from dynamics.train.probes import curvature  # noqa: F401  (registers its probes)
from dynamics.train.probes import evaluation  # noqa: F401  (registers its probes)
from dynamics.train.probes import grokking  # noqa: F401  (registers its probe)
