"""The batch_sharpness, update_sharpness, trace_condition and spectral_norms probes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from test_probes import _built, _config, _context, _dense, _params32

from dynamics import curvature
from dynamics.registry import ConfigError
from dynamics.train.probes import PROBES, ProbeContext
from dynamics.train.probes.minibatch import fresh_minibatches


def _with_batch(ctx, batch_size):
    config = ctx.config.copy_and_resolve_references()
    config.data.batch_size = batch_size
    return ProbeContext(**{**ctx.__dict__, "config": config})


def test_fresh_minibatches_are_distinct_examples_of_the_training_size(mlp):
    data = {"x": jnp.arange(32.0)[:, None], "y": jnp.arange(32)}
    batches = fresh_minibatches(jax.random.key(0), data, 5, 8)
    assert batches["x"].shape == (5, 8, 1)
    for row in np.asarray(batches["y"]):
        assert len(set(row.tolist())) == 8  # without replacement within a minibatch
    np.testing.assert_array_equal(np.asarray(batches["x"])[..., 0], np.asarray(batches["y"]))
    whole = fresh_minibatches(jax.random.key(0), data, 5, 32)
    assert whole["x"].shape == (1, 32, 1)


def test_batch_sharpness_probe_full_batch_and_minibatch(mlp):
    ctx = _context(mlp, _config("sgd"))
    params = _params32(mlp)
    h = _dense(mlp, params)
    with jax.enable_x64(True):
        g = mlp.ravel(jax.grad(mlp.loss_fn)(mlp.jax_params(), mlp.jax_data()))
    probe = _built("batch_sharpness", {"every": 1, "num_batches": 16}, ctx)
    metrics, _ = probe(ctx, 0, params, None, {})
    assert metrics["batch_sharpness"] == pytest.approx(g @ h @ g / (g @ g), rel=1e-4)
    assert metrics["batch_sharpness_stderr"] == 0.0
    assert metrics["batch_sharpness_threshold"] == pytest.approx(2 / 0.1)

    mini = _with_batch(ctx, 8)
    probe = _built("batch_sharpness", {"every": 1, "num_batches": 16}, mini)
    metrics, _ = probe(mini, 3, params, None, {})
    batches = fresh_minibatches(probe.key(mini, 3), mini.train, 16, 8)
    expected = curvature.batch_sharpness(mlp.loss_fn, params, batches)
    assert metrics["batch_sharpness"] == pytest.approx(float(expected.estimate), rel=1e-5)
    assert metrics["batch_sharpness_stderr"] > 0
    # Small minibatches are sharper along their own gradients than the full batch is.
    assert metrics["batch_sharpness"] > g @ h @ g / (g @ g)


def test_update_sharpness_of_sgd_is_the_curvature_along_the_minibatch_gradient(mlp):
    ctx = _with_batch(_context(mlp, _config("sgd")), 8)
    params = _params32(mlp)
    probe = _built("update_sharpness", {"every": 1}, ctx)
    metrics, _ = probe(ctx, 2, params, ctx.tx.init(params), {})
    batch = jax.tree.map(lambda a: a[0], fresh_minibatches(probe.key(ctx, 2), ctx.train, 1, 8))
    g = mlp.ravel(jax.grad(mlp.loss_fn)(params, batch)).astype(np.float64)
    h = _dense(mlp, params)
    assert metrics["update_sharpness"] == pytest.approx(g @ h @ g / (g @ g), rel=1e-4)
    assert metrics["update_sharpness_threshold"] == pytest.approx(20.0)


def test_trace_condition_probe(mlp):
    ctx = _with_batch(_context(mlp, _config("sgd")), 16)
    params = _params32(mlp)
    h = _dense(mlp, params)
    probe = _built("trace_condition", {"every": 1, "num_probes": 200}, ctx)
    m, _ = probe(ctx, 0, params, None, {})
    assert abs(m["trace_condition/trace"] - np.trace(h)) < 4 * m["trace_condition/trace_stderr"]
    assert abs(m["trace_condition/frobenius"] - np.linalg.norm(h)) < (
        4 * m["trace_condition/frobenius_stderr"]
    )
    assert m["trace_condition/trace_threshold"] == pytest.approx(20.0)
    assert m["trace_condition/frobenius_threshold"] == pytest.approx(4 / 0.1)


def _flax_problem():
    from dynamics.data import DataSpec
    from dynamics.models.mlp import mlp as mlp_model

    model = mlp_model(DataSpec((6,), "float32", 3), widths=(16, 8))
    rng = np.random.default_rng(0)
    params = model.init(jax.random.key(0), jnp.zeros((1, 6)))
    data = {
        "x": jnp.asarray(rng.normal(size=(32, 6)), jnp.float32),
        "y": jnp.asarray(rng.integers(0, 3, 32), jnp.int32),
    }

    class Problem:
        per_example_loss = staticmethod(
            lambda out, y: 0.5 * jnp.sum((out - jax.nn.one_hot(y, 3)) ** 2, -1)
        )
        apply_fn = staticmethod(model.apply)

        def loss_fn(self, p, b):
            return jnp.mean(self.per_example_loss(model.apply(p, b["x"]), b["y"]))

    problem = Problem()
    problem.data = data
    return problem, params


def test_spectral_norms_probe_against_numpy_svd_with_warm_start():
    problem, params = _flax_problem()
    ctx = _context(problem, _config("sgd"))
    probe = _built("spectral_norms", {"every": 1, "num_iters": 4}, ctx)
    state = probe.init(ctx, params)
    assert [v.shape for v in state["weights"]] == [(16,), (8,), (3,)]
    errors = []
    for t in range(12):  # warm-started: 4 more products every call at the same weights
        metrics, state = probe(ctx, t, params, ctx.tx.init(params), state)
        w = np.asarray(params["Dense_1"]["kernel"], np.float64)
        errors.append(abs(metrics["spectral_norm/Dense_1"] - np.linalg.svd(w)[1][0]))
    assert errors[-1] < 1e-5 * np.linalg.svd(w)[1][0]
    assert errors[-1] < errors[0]
    for name in ("Dense_0", "Dense_1", "Dense_2"):
        w = np.asarray(params[name]["kernel"], np.float64)
        s = np.linalg.svd(w, compute_uv=False)
        assert metrics[f"spectral_norm/{name}"] == pytest.approx(s[0], rel=1e-5)
        assert metrics[f"stable_rank/{name}"] == pytest.approx(np.sum(s**2) / s[0] ** 2, rel=1e-4)
        p = s / s.sum()
        assert metrics[f"effective_rank/{name}"] == pytest.approx(
            np.exp(-np.sum(p * np.log(p))), rel=1e-4
        )
        assert metrics[f"spectral_norm_target/{name}"] == pytest.approx(
            np.sqrt(w.shape[1] / w.shape[0])
        )
    # The update of SGD on a fresh full batch is -lr * grad: its norms by SVD.
    g = jax.grad(problem.loss_fn)(params, ctx.train)
    du = -0.1 * np.asarray(g["Dense_0"]["kernel"], np.float64)
    sd = np.linalg.svd(du, compute_uv=False)
    assert metrics["update_spectral_norm/Dense_0"] == pytest.approx(sd[0], rel=1e-3)
    assert metrics["update_ratio/Dense_0"] == pytest.approx(
        sd[0] / np.linalg.svd(np.asarray(params["Dense_0"]["kernel"]), compute_uv=False)[0],
        rel=1e-3,
    )


def test_new_probes_on_eight_devices_equal_one_device(mlp):
    assert jax.device_count() == 8
    mesh = Mesh(np.array(jax.devices()), ("data",))
    ctx = _with_batch(_context(mlp, _config("sgd")), 8)
    params = _params32(mlp)
    sharded = ProbeContext(
        **{
            **ctx.__dict__,
            "train": jax.device_put(ctx.train, NamedSharding(mesh, PartitionSpec("data"))),
        }
    )
    replicated = jax.device_put(params, NamedSharding(mesh, PartitionSpec()))
    for name, kwargs in [
        ("batch_sharpness", {"num_batches": 8}),
        ("update_sharpness", {}),
        ("trace_condition", {"num_probes": 6}),
    ]:
        one = _built(name, {"every": 1, **kwargs}, ctx)(ctx, 4, params, ctx.tx.init(params), {})[0]
        eight = _built(name, {"every": 1, **kwargs}, sharded)(
            sharded, 4, replicated, ctx.tx.init(replicated), {}
        )[0]
        assert set(one) == set(eight)
        for k in one:
            assert eight[k] == pytest.approx(one[k], rel=1e-5, abs=1e-7), (name, k)


def test_spectral_norms_on_eight_devices_equal_one_device():
    problem, params = _flax_problem()
    mesh = Mesh(np.array(jax.devices()), ("data",))
    ctx = _context(problem, _config("sgd"))
    sharded = ProbeContext(
        **{
            **ctx.__dict__,
            "train": jax.device_put(ctx.train, NamedSharding(mesh, PartitionSpec("data"))),
        }
    )
    replicated = jax.device_put(params, NamedSharding(mesh, PartitionSpec()))
    p1, p8 = (_built("spectral_norms", {"every": 1}, c) for c in (ctx, sharded))
    one = p1(ctx, 0, params, ctx.tx.init(params), p1.init(ctx, params))[0]
    eight = p8(sharded, 0, replicated, ctx.tx.init(replicated), p8.init(sharded, replicated))[0]
    for k in one:
        assert eight[k] == pytest.approx(one[k], rel=1e-5), k


@pytest.mark.parametrize(
    ("name", "kwargs", "words"),
    [
        ("batch_sharpness", {"num_batches": 1}, "num_batches must be an integer >= 2"),
        ("trace_condition", {"num_probes": 1}, "num_probes must be an integer >= 2"),
        ("spectral_norms", {"num_iters": 0}, "num_iters must be an integer >= 1"),
    ],
)
def test_bad_options_are_config_errors(name, kwargs, words):
    with pytest.raises(ConfigError, match=words):
        PROBES.build(name, {"every": 1, **kwargs}, where=f"probes.{name}")
