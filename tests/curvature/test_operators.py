"""Products and dataset-level operators against dense float64 matrices; sharded == unsharded."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from curvature_problems import cross_entropy, make_mlp, mse
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from dynamics import curvature
from dynamics.curvature import tree


def test_hvp_matches_dense_hessian(mlp):
    with jax.enable_x64(True):
        h = mlp.dense_hessian()
        v = tree.normal_like(jax.random.key(0), mlp.jax_params())
        hv = curvature.hvp(mlp.loss_fn, mlp.jax_params(), v, mlp.jax_data())
        np.testing.assert_allclose(mlp.ravel(hv), h @ mlp.ravel(v), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("microbatch_size", [8, 7])  # 32 examples: 4 full, or 4 full + 4 left
def test_dataset_operator_equals_full_batch(mlp, microbatch_size):
    with jax.enable_x64(True):
        params, data = mlp.jax_params(), mlp.jax_data()
        v = tree.normal_like(jax.random.key(1), params)
        full = curvature.hvp(mlp.loss_fn, params, v, data)
        micro = jax.jit(
            lambda p, d, v: curvature.dataset_operator(mlp.loss_fn, p, d, microbatch_size)(v)
        )(params, data, v)
        np.testing.assert_allclose(mlp.ravel(micro), mlp.ravel(full), rtol=1e-10, atol=1e-13)
        loss, grad = curvature.dataset_loss_and_grad(mlp.loss_fn, params, data, microbatch_size)
        np.testing.assert_allclose(float(loss), float(mlp.loss_fn(params, data)), rtol=1e-12)
        np.testing.assert_allclose(
            mlp.ravel(grad), mlp.ravel(jax.grad(mlp.loss_fn)(params, data)), rtol=1e-10
        )


@pytest.mark.parametrize("loss", [mse, cross_entropy])
def test_gauss_newton_matches_dense_jacobians(loss):
    problem = make_mlp(loss, n=12)
    with jax.enable_x64(True):
        params, data = problem.jax_params(), problem.jax_data()
        flat = problem.ravel(params)
        jac = np.asarray(
            jax.jacobian(lambda f: problem.apply_fn(problem.unravel(f), data["x"]))(
                jnp.asarray(flat)
            )
        )  # [n, classes, params]
        logits = np.asarray(problem.apply_fn(params, data["x"]))
        n, c = logits.shape
        if loss is mse:
            h_out = np.broadcast_to(np.eye(c), (n, c, c)) / n
        else:
            p = np.exp(logits - logits.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            h_out = (np.einsum("ni,ij->nij", p, np.eye(c)) - np.einsum("ni,nj->nij", p, p)) / n
        g = np.einsum("nip,nij,njq->pq", jac, h_out, jac)
        v = tree.normal_like(jax.random.key(2), params)
        gv = curvature.gnvp(problem.apply_fn, loss, params, v, data)
        gv_micro = curvature.dataset_gauss_newton_operator(
            problem.apply_fn, loss, params, data, microbatch_size=5
        )(v)
    np.testing.assert_allclose(problem.ravel(gv), g @ problem.ravel(v), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(problem.ravel(gv_micro), problem.ravel(gv), rtol=1e-9, atol=1e-12)
    assert np.linalg.eigvalsh(g).min() > -1e-10  # positive semi-definite, unlike the Hessian


def test_eight_devices_with_sharded_data_equal_one_device(mlp):
    assert jax.device_count() == 8
    mesh = Mesh(np.array(jax.devices()), ("data",))
    with jax.enable_x64(True):
        params, data = mlp.jax_params(), mlp.jax_data()

        def probe(p, d):
            top = curvature.top_eigenpairs(
                mlp.loss_fn, p, d, k=2, num_iters=20, key=jax.random.key(0), microbatch_size=16
            )
            est = curvature.hessian_trace(mlp.loss_fn, p, d, key=jax.random.key(1), num_probes=6)
            return top.eigenvalues, est.estimate

        single = jax.jit(probe)(jax.device_put(params, jax.devices()[0]), data)
        sharded_data = jax.device_put(data, NamedSharding(mesh, PartitionSpec("data")))
        replicated = jax.device_put(params, NamedSharding(mesh, PartitionSpec()))
        assert len(sharded_data["x"].sharding.device_set) == 8
        sharded = jax.jit(probe)(replicated, sharded_data)
    np.testing.assert_allclose(np.asarray(sharded[0]), np.asarray(single[0]), rtol=1e-10)
    np.testing.assert_allclose(float(sharded[1]), float(single[1]), rtol=1e-10)
