"""Every public curvature entry point compiles once across eager calls with the same ``loss_fn``.

A trace counter inside ``loss_fn`` counts how often JAX traces it: after the first call, four more
eager calls with new parameter values must not trace again, and the result must still be the one
for the new parameters (checked against the jitted call and a dense Hessian).
"""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dynamics import curvature


class CountingLoss:
    """A mean-squared loss of a small tanh network that counts its traces."""

    def __init__(self):
        self.traces = 0

    def __call__(self, w, batch):
        self.traces += 1
        h = jnp.tanh(batch["x"] @ w["a"])
        return 0.5 * jnp.mean((h @ w["b"] - batch["y"]) ** 2)


DATA = {"x": jax.random.normal(jax.random.key(1), (32, 4)), "y": jnp.zeros(32)}
KEY = jax.random.key(0)


def _params(i):
    ka, kb = jax.random.split(jax.random.key(10 + i))
    return {"a": jax.random.normal(ka, (4, 5)), "b": jax.random.normal(kb, (5,))}


def _ones(p):
    return jax.tree.map(jnp.ones_like, p)


CALLS = {
    "top_eigenpairs": lambda f, p: curvature.top_eigenpairs(f, p, DATA, k=2, num_iters=8, key=KEY),
    "eigsh": None,  # matvec-based: checked separately below
    "spectral_density": lambda f, p: curvature.spectral_density(
        f, p, DATA, key=KEY, num_probes=2, num_iters=6
    ),
    "hessian_trace": lambda f, p: curvature.hessian_trace(f, p, DATA, key=KEY, num_probes=6),
    "preconditioned_sharpness": lambda f, p: curvature.preconditioned_sharpness(
        f, p, _ones(p), DATA, key=KEY, num_iters=6
    ),
    "batch_sharpness": lambda f, p: curvature.batch_sharpness(f, p, _batches()),
    "directional_sharpness": lambda f, p: curvature.directional_sharpness(f, p, _ones(p), DATA),
    "trace_condition": lambda f, p: curvature.trace_condition(f, p, DATA, key=KEY, num_probes=4),
    "block_top_eigenpairs": lambda f, p: curvature.block_top_eigenpairs(
        f, p, DATA, block="['a']", k=1, num_iters=6, key=KEY
    ),
}


def _batches():
    return jax.tree.map(lambda a: a.reshape(4, 8, *a.shape[1:]), DATA)


@pytest.mark.parametrize("name", [n for n, c in CALLS.items() if c is not None])
def test_one_trace_over_five_eager_calls_with_new_params(name):
    loss = CountingLoss()
    call = CALLS[name]
    jax.block_until_ready(call(loss, _params(0)))
    after_first = loss.traces
    assert after_first > 0
    outputs = []
    for i in range(1, 5):
        outputs.append(jax.block_until_ready(call(loss, _params(i))))
    assert loss.traces == after_first
    # The cached program is the computation at the new parameters, not a stale constant.
    jitted = jax.jit(lambda p: call(loss, p))(_params(4))
    for a, b in zip(jax.tree.leaves(outputs[-1]), jax.tree.leaves(jitted), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=1e-5)
    assert jax.tree.leaves(outputs[-1])[0] is not None


def test_step_stability_compiles_once_per_step_function():
    loss = CountingLoss()
    step = curvature.optax_step(loss, optax.sgd(0.1))
    counts = []
    for i in range(5):
        p = _params(i)
        jax.block_until_ready(
            curvature.step_stability(step, p, optax.sgd(0.1).init(p), DATA, num_iters=6, key=KEY)
        )
        counts.append(loss.traces)
    assert counts[0] > 0 and len(set(counts)) == 1


def test_matvec_entry_points_cache_on_the_same_matvec_object():
    traces = []
    a = jnp.diag(jnp.arange(1.0, 7.0))

    def matvec(v):
        traces.append(1)
        return a @ v

    values = []
    for i in range(5):
        v0 = jnp.ones(6) + i
        values.append(curvature.eigsh(matvec, v0, k=1, num_iters=6, key=KEY).eigenvalues[0])
        curvature.power_iteration(matvec, v0, 40)
    assert len(traces) == 2 + 2  # eigsh: scan body and residual; power: body and final product
    np.testing.assert_allclose(values, 6.0, rtol=1e-5)


def test_top_eigenpairs_eager_matches_dense_hessian_at_each_new_point():
    loss = CountingLoss()
    with jax.enable_x64(True):
        data = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), DATA)
        for i in range(3):
            p = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), _params(i))
            flat, unravel = jax.flatten_util.ravel_pytree(p)
            dense = jax.hessian(lambda f: loss(unravel(f), data))(flat)
            expected = np.linalg.eigvalsh(np.asarray(dense))[-1]
            pairs = curvature.top_eigenpairs(loss, p, data, k=1, num_iters=21, key=KEY)
            assert float(pairs.eigenvalues[0]) == pytest.approx(expected, rel=1e-9)


def test_a_dropped_loss_function_releases_its_programs():
    import gc
    import weakref

    loss = CountingLoss()
    curvature.hessian_trace(loss, _params(0), DATA, key=KEY, num_probes=6)
    assert curvature.hessian_trace.compiled(loss) == 1
    ref = weakref.ref(loss)
    del loss
    gc.collect()
    assert ref() is None
