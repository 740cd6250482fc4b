"""Probes: metrics computed every N steps; importing this package registers them all."""

from dynamics.train.probes.base import PROBES, Probe, ProbeContext
