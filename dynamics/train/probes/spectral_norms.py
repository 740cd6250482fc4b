"""The spectral-condition probe: per-matrix spectral norms and ranks of the weights and updates.

``spectral_norms(every, num_iters=10, effective_rank=True)`` logs, for every parameter matrix
(leaves with >= 2 axes, Flax layout ``(..., in, out)``; named by path with ``/kernel`` dropped,
e.g. ``Dense_0``):

* ``spectral_norm/<name>`` ||W||_2 and ``spectral_norm_target/<name>`` sqrt(fan_out / fan_in),
  the scale Yang, Simon & Bernstein (2023) prescribe for both W and its update;
* ``update_spectral_norm/<name>`` ||dW||_2 of the update u the optimizer takes from a fresh
  minibatch of the training batch size (its state as it is now), and ``update_ratio/<name>``
  ||dW||_2 / ||W||_2;
* ``stable_rank/<name>``, ``update_stable_rank/<name>`` and, with ``effective_rank``,
  ``effective_rank/<name>``, ``update_effective_rank/<name>`` (see
  :mod:`dynamics.curvature.matrix_norms`).

The spectral norms come from power iteration warm-started from the previous probe's right
singular vectors (the probe state, one vector per matrix for W and one for dW, checkpointed with
the run), ``num_iters`` products of W^T W per probe.

Example (config):
  >>> import ml_collections
  >>> probes = ml_collections.ConfigDict({"spectral_norms": {"every": 100, "num_iters": 10}})
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dynamics.curvature import matrix_norms as mn
from dynamics.registry import ConfigError
from dynamics.train.probes.base import PROBES, Probe, ProbeContext
from dynamics.train.probes.minibatch import optimizer_update


class SpectralNorms(Probe):
    name = "spectral_norms"

    def __init__(self, every, num_iters=10, effective_rank=True):
        super().__init__(every)
        if not isinstance(num_iters, int) or num_iters < 1:
            raise ConfigError(f"probe num_iters must be an integer >= 1, got {num_iters!r}")
        self.num_iters, self.effective_rank = num_iters, bool(effective_rank)

    def init(self, ctx, params):
        leaves = jax.tree.leaves(params)
        vectors = [jnp.zeros(leaves[i].shape[-1], leaves[i].dtype) for i, _ in self._names(params)]
        return {"weights": vectors, "updates": list(vectors)}

    def _names(self, params):
        names = mn.matrix_names(params)
        if not names:
            raise ConfigError(
                "probes.spectral_norms needs a model with weight matrices; none found"
            )
        return names

    def setup(self, ctx: ProbeContext):
        self._fn = jax.jit(
            lambda p, s, d, st, k: self._compute(ctx, self._names(p), p, s, d, st, k)
        )

    def _compute(self, ctx, names, params, opt_state, train, state, key):
        updates = optimizer_update(ctx, params, opt_state, train, key)
        w_leaves, u_leaves = jax.tree.leaves(params), jax.tree.leaves(updates)
        metrics, new = {}, {"weights": [], "updates": []}
        for j, (i, name) in enumerate(names):
            for kind, leaf, prefix in (
                ("weights", w_leaves[i], ""),
                ("updates", u_leaves[i], "update_"),
            ):
                v0 = state[kind][j]
                # A cold start (zero state) begins from a fixed pseudo-random vector.
                cold = jax.random.normal(jax.random.key(j), v0.shape, v0.dtype)
                v0 = jnp.where(jnp.linalg.norm(v0) > 0, v0, cold)
                sigma, v = mn.spectral_norm(leaf, v0, self.num_iters)
                new[kind].append(v)
                metrics[f"{prefix}spectral_norm/{name}"] = sigma
                metrics[f"{prefix}stable_rank/{name}"] = mn.stable_rank(leaf, sigma)
                if self.effective_rank:
                    metrics[f"{prefix}effective_rank/{name}"] = mn.effective_rank(leaf)
            metrics[f"update_ratio/{name}"] = (
                metrics[f"update_spectral_norm/{name}"] / metrics[f"spectral_norm/{name}"]
            )
        return metrics, new

    def __call__(self, ctx, step, params, opt_state, probe_state):
        names = self._names(params)
        metrics, state = self._fn(params, opt_state, ctx.train, probe_state, self.key(ctx, step))
        out = {k: float(v) for k, v in metrics.items()}
        leaves = jax.tree.leaves(params)
        for i, name in names:
            out[f"spectral_norm_target/{name}"] = mn.spectral_target(leaves[i])
        return out, state


PROBES.register("spectral_norms", SpectralNorms)
