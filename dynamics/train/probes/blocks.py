"""Per-block metrics for the ``blocks=`` option of the ``sharpness``, ``hessian_trace`` and
``spectral_density`` probes.

``blocks`` is ``"layers"`` (one block per top-level module: ``Dense_0``, ``Dense_1``, ...), a
mapping ``{name: pattern}`` or a sequence of patterns (each named by the pattern without a
trailing ``/*``), with the path patterns of :mod:`dynamics.curvature.blocks`
(``"Dense_0/*"``, ``"*/kernel"``). Each block adds ``<metric>/<name>`` to the probe's metrics:
``sharpness/Dense_0`` (lambda_max of the block's Hessian, at most the full ``sharpness`` by
interlacing), ``hessian_trace/Dense_0`` with ``hessian_trace_stderr/Dense_0``, and
``spectral_density/Dense_0`` with ``spectral_density_grid/Dense_0``. Names sharing the prefix
before ``/`` share one panel of ``plots/metrics.png``: the per-layer figure.

Example (config):
  >>> import ml_collections
  >>> probes = ml_collections.ConfigDict({"sharpness": {"every": 50, "blocks": "layers"}})
"""

from __future__ import annotations

from collections.abc import Mapping

import jax

from dynamics import curvature
from dynamics.registry import ConfigError


def check_blocks(blocks) -> None:
    """Rejects a ``blocks`` option that is none of the accepted forms (before anything runs)."""
    if blocks is None or blocks == "layers":
        return
    if isinstance(blocks, Mapping):
        patterns = list(blocks.values())
    elif isinstance(blocks, list | tuple):
        patterns = list(blocks)
    else:
        patterns = None
    if not patterns or not all(isinstance(p, str) for p in patterns):
        raise ConfigError(
            f"probe blocks must be 'layers', a mapping of names to path patterns or a list of "
            f"patterns (e.g. 'Dense_0/*'); got {blocks!r}"
        )


def resolve_blocks(blocks, params) -> dict[str, str]:
    """``{name: pattern}``; every pattern must select at least one leaf (``ConfigError``)."""
    if blocks == "layers":
        named = curvature.layer_blocks(params)
    elif isinstance(blocks, Mapping):
        named = dict(blocks)
    else:
        named = {p.removeprefix("params/").removesuffix("/*"): p for p in blocks}
    for name, pattern in named.items():
        try:
            curvature.block_leaves(params, pattern)
        except ValueError as e:
            raise ConfigError(f"probe block {name!r}: {e}") from None
    return named


def block_metrics(kind: str, loss_fn, params, data, key, named, options) -> dict[str, jax.Array]:
    """The per-block metrics of one probe kind (``"sharpness"``, ``"hessian_trace"``,
    ``"spectral_density"``); jittable, ``options`` are that kind's keyword arguments."""
    metrics = {}
    keys = jax.random.split(key, len(named))
    for (name, pattern), k in zip(named.items(), keys, strict=True):
        if kind == "sharpness":
            pairs = curvature.block_top_eigenpairs(
                loss_fn, params, data, block=pattern, key=k, **options
            )
            metrics[f"sharpness/{name}"] = pairs.eigenvalues[0]
        elif kind == "hessian_trace":
            est = curvature.block_hessian_trace(
                loss_fn, params, data, block=pattern, key=k, **options
            )
            metrics[f"hessian_trace/{name}"] = est.estimate
            metrics[f"hessian_trace_stderr/{name}"] = est.stderr
        else:
            d = curvature.block_spectral_density(
                loss_fn, params, data, block=pattern, key=k, **options
            )
            metrics[f"spectral_density_grid/{name}"] = d.grid
            metrics[f"spectral_density/{name}"] = d.density
    return metrics


def to_host(metrics: dict) -> dict:
    """Scalars as floats, curves as lists."""
    out = {}
    for name, value in jax.device_get(metrics).items():
        out[name] = float(value) if getattr(value, "ndim", 0) == 0 else value.tolist()
    return out


def block_fn(blocks, ctx, kind: str, options: dict):
    """The jitted per-block metrics ``(params, data, key) -> metrics`` of one probe kind, built
    in the probe's ``setup`` (None without ``blocks``); the blocks are resolved against the
    parameter tree when it is traced."""
    if blocks is None:
        return None
    return jax.jit(
        lambda p, d, k: block_metrics(
            kind, ctx.loss_fn, p, d, k, resolve_blocks(blocks, p), options
        )
    )


def run_blocks(fn, params, data, key: jax.Array) -> dict:
    """The per-block metrics from ``fn`` (a :func:`block_fn`; empty when it is None), on a stream
    of ``key`` (the probe's key at the step) apart from the probe's own."""
    if fn is None:
        return {}
    return to_host(fn(params, data, jax.random.fold_in(key, 1)))
