"""Device mesh and shardings from ``config.mesh``: batches on ``data``, parameters on ``model``.

The mesh has axes ``("data", "model")`` of sizes ``(mesh.data, mesh.model)`` over the first
``data * model`` global devices. Batches are split along their example axis over ``data``. A
parameter leaf with at least two dimensions whose last dimension ``mesh.model`` divides is split
over ``model`` along that dimension (the output features of a Flax ``(in, out)`` kernel); every
other leaf is replicated. ``jax.jit`` propagates these annotations through the step, so the same
code runs on one device, 8 simulated CPU devices or many hosts.

Example:
  >>> mesh = make_mesh(1, 1)
  >>> batch_sharding(mesh).spec == jax.sharding.PartitionSpec("data")
  True
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXES = ("data", "model")


def make_mesh(data: int, model: int) -> Mesh:
    """A ``(data, model)`` mesh over the first ``data * model`` devices of all processes."""
    devices = np.asarray(jax.devices()[: data * model]).reshape(data, model)
    return Mesh(devices, AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Examples split over ``data``, everything else whole."""
    return NamedSharding(mesh, P("data"))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def dataset_sharding(mesh: Mesh, num_examples: int) -> NamedSharding:
    """Split a whole dataset over ``data`` when it divides evenly, else replicate it.

    Replication keeps every example of an uneven dataset (no padding that probes would have to
    mask); minibatches gathered from it are still split over ``data`` inside the step.
    """
    if num_examples % mesh.shape["data"] == 0:
        return batch_sharding(mesh)
    return replicated(mesh)


def param_sharding(mesh: Mesh, params: Any) -> Any:
    """The sharding of every parameter leaf by the rule in the module docstring."""
    model = mesh.shape["model"]

    def rule(leaf):
        shape = np.shape(leaf)
        if model > 1 and len(shape) >= 2 and shape[-1] % model == 0:
            return NamedSharding(mesh, P(*([None] * (len(shape) - 1)), "model"))
        return replicated(mesh)

    return jax.tree.map(rule, params)


def state_sharding(mesh: Mesh, tree: Any) -> Any:
    """The shardings of an array tree computed from sharded inputs (e.g. an optimizer state).

    Leaves jit placed by propagation keep their ``NamedSharding``; leaves that depend on no
    sharded input (step counters) are replicated over the mesh.
    """

    def one(x):
        return x.sharding if isinstance(x.sharding, NamedSharding) else replicated(mesh)

    return jax.tree.map(one, tree)


def put(tree: Any, shardings: Any) -> Any:
    """Host arrays -> global device arrays with the given shardings (multi-process safe).

    Every process holds the whole host array; each fills the shards of its own devices.
    """

    def one(x, sharding):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree.map(one, tree, shardings)
