"""Block (per-layer) curvature against the dense Hessian's principal sub-blocks."""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from dynamics import curvature
from dynamics.curvature.blocks import block_size, leaf_paths


def _offsets(params):
    """(start, stop) of every leaf in ``ravel_pytree`` order, keyed by its path."""
    out, start = {}, 0
    for path, leaf in zip(leaf_paths(params), jax.tree.leaves(params), strict=True):
        out[path] = (start, start + int(np.size(leaf)))
        start += int(np.size(leaf))
    return out


def _sub_block(h, params, selected):
    offsets = _offsets(params)
    idx = np.concatenate(
        [np.arange(*offsets[p]) for p, s in zip(leaf_paths(params), selected, strict=True) if s]
    )
    return h[np.ix_(idx, idx)]


def test_leaf_paths_and_patterns(mlp):
    params = mlp.jax_params()
    assert leaf_paths(params) == ["b1", "b2", "w1", "w2"]
    assert curvature.block_leaves(params, "w*") == (False, False, True, True)
    assert curvature.block_leaves(params, "params/b1") == (True, False, False, False)
    mask = {"w1": True, "b1": True, "w2": False, "b2": False}
    assert curvature.block_leaves(params, mask) == (True, False, True, False)
    with pytest.raises(ValueError, match="selects no parameter; leaf paths: b1, b2, w1, w2"):
        curvature.block_leaves(params, "Dense_9/*")


def test_flax_paths_name_one_block_per_layer():
    from dynamics.data import DataSpec
    from dynamics.models.mlp import mlp as mlp_model

    model = mlp_model(DataSpec((4,), "float32", 3), widths=(5,))
    params = model.init(jax.random.key(0), jnp.zeros((1, 4)))
    assert leaf_paths(params) == [
        "Dense_0/bias",
        "Dense_0/kernel",
        "Dense_1/bias",
        "Dense_1/kernel",
    ]
    assert curvature.layer_blocks(params) == {"Dense_0": "Dense_0/*", "Dense_1": "Dense_1/*"}
    assert block_size(params, "Dense_0/*") == 4 * 5 + 5


@pytest.mark.parametrize("block", ["w1", "w*", {"w1": False, "b1": True, "w2": True, "b2": True}])
def test_block_eigenvalues_trace_and_density_match_the_dense_sub_block(mlp, block):
    with jax.enable_x64(True):
        params, data = mlp.jax_params(), mlp.jax_data()
        selected = curvature.block_leaves(params, block)
        sub = _sub_block(mlp.dense_hessian(), params, selected)
        dim = sub.shape[0]
        evals = np.linalg.eigvalsh(sub)
        pairs = curvature.block_top_eigenpairs(
            mlp.loss_fn, params, data, block=block, k=2, num_iters=dim, key=jax.random.key(0)
        )
        bottom = curvature.block_top_eigenpairs(
            mlp.loss_fn,
            params,
            data,
            block=block,
            k=1,
            num_iters=dim,
            key=jax.random.key(0),
            which="SA",
        )
        tr = curvature.block_hessian_trace(
            mlp.loss_fn,
            params,
            data,
            block=block,
            key=jax.random.key(1),
            num_probes=3 * dim,
            microbatch_size=8,
        )
        density = curvature.block_spectral_density(
            mlp.loss_fn,
            params,
            data,
            block=block,
            key=jax.random.key(2),
            num_probes=2,
            num_iters=dim,
        )
    np.testing.assert_allclose(np.asarray(pairs.eigenvalues), evals[::-1][:2], rtol=1e-8)
    assert float(bottom.eigenvalues[0]) == pytest.approx(evals[0], rel=1e-8, abs=1e-10)
    # Hutch++ with 3 x dim products spans the block exactly: its trace is exact.
    assert float(tr.estimate) == pytest.approx(np.trace(sub), rel=1e-8)
    # A full Krylov space: the quadrature nodes are the block's eigenvalues.
    nodes = np.asarray(density.nodes)[0]
    weights = np.asarray(density.weights)[0]
    assert weights.sum() == pytest.approx(1.0, rel=1e-10)
    assert np.min(np.abs(nodes[weights > 1e-8][:, None] - evals[None]), axis=1).max() < 1e-6


def test_every_layer_obeys_interlacing_on_a_random_mlp():
    from dynamics.data import DataSpec
    from dynamics.models.mlp import mlp as mlp_model

    model = mlp_model(DataSpec((6,), "float32", 3), widths=(8, 8))
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        params = jax.tree.map(
            lambda a: jnp.asarray(a, jnp.float64) + 0.3,
            model.init(jax.random.key(1), jnp.zeros((1, 6))),
        )
        data = {
            "x": jnp.asarray(rng.normal(size=(40, 6))),
            "y": jnp.asarray(rng.integers(0, 3, 40)),
        }

        def loss(p, b):
            out = model.apply(p, b["x"])
            return 0.5 * jnp.mean(jnp.sum((out - jax.nn.one_hot(b["y"], 3)) ** 2, -1))

        flat, unravel = jax.flatten_util.ravel_pytree(params)
        h = np.asarray(jax.hessian(lambda f: loss(unravel(f), data))(flat))
        per_layer = curvature.layer_sharpness(
            loss, params, data, num_iters=60, key=jax.random.key(0)
        )
        full = np.linalg.eigvalsh(h)[-1]
        for name, value in per_layer.items():
            selected = curvature.block_leaves(params, f"{name}/*")
            expected = np.linalg.eigvalsh(_sub_block(h, params, selected))[-1]
            assert float(value) == pytest.approx(expected, rel=1e-7)
            assert float(value) <= full * (1 + 1e-10)
    assert set(per_layer) == {"Dense_0", "Dense_1", "Dense_2"}
    assert max(float(v) for v in per_layer.values()) < full  # strict here: layers couple
