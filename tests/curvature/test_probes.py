"""The runner's curvature probes, called directly with a hand-built ProbeContext."""

import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from dynamics.optim.registry import OPTIMIZERS, sharpness_threshold
from dynamics.registry import ConfigError
from dynamics.train.config import base_config
from dynamics.train.probes import PROBES, ProbeContext


def _config(name, **optimizer):
    config = base_config()
    config.optimizer.name = name
    config.optimizer.learning_rate = 0.1
    config.optimizer.update(optimizer)
    return config


def _context(problem, config):
    lr = config.optimizer.learning_rate
    kwargs = {k: v for k, v in config.optimizer.items() if k not in base_config().optimizer}
    tx = optax.with_extra_args_support(
        OPTIMIZERS.build(config.optimizer.name, {"learning_rate": lr, **kwargs})
    )
    train = jax.tree.map(jnp.asarray, problem.data)
    train["x"] = train["x"].astype(jnp.float32)
    return ProbeContext(
        loss_fn=problem.loss_fn,
        apply_fn=problem.apply_fn,
        per_example_loss=problem.per_example_loss,
        train=train,
        test=None,
        num_classes=3,
        learning_rate=optax.constant_schedule(lr),
        tx=tx,
        mesh=None,
        config=config,
    )


def _built(name, kwargs, ctx):
    """The probe ``name`` as the loop makes it: built from its config entry, then set up."""
    probe = PROBES.build(name, kwargs)
    probe.setup(ctx)
    return probe


def _params32(problem):
    return jax.tree.map(lambda p: jnp.asarray(p, jnp.float32), problem.params)


def _dense(problem, params, n=None):
    """float64 Hessian at ``params`` on the first ``n`` examples."""
    with jax.enable_x64(True):
        sub = jax.tree.map(lambda a: a[:n], problem.data)
        saved, problem.data = problem.data, sub
        try:
            return problem.dense_hessian_at(
                jax.tree.map(lambda p: jnp.asarray(p, jnp.float64), params)
            )
        finally:
            problem.data = saved


def test_sharpness_probe_on_a_subset_with_warm_start(mlp):
    config = _config("sgd")
    ctx = _context(mlp, config)
    params = _params32(mlp)
    probe = _built(
        "sharpness",
        {"every": 5, "k": 2, "num_iters": 30, "num_examples": 16, "microbatch_size": 8},
        ctx,
    )
    state = probe.init(ctx, params)
    metrics, state = probe(ctx, 0, params, None, state)
    lam = np.linalg.eigvalsh(_dense(mlp, params, 16))[::-1]
    assert metrics["sharpness"] == pytest.approx(lam[0], rel=1e-4)
    assert metrics["sharpness_2"] == pytest.approx(lam[1], rel=1e-4)
    assert metrics["sharpness_threshold"] == pytest.approx(2 / 0.1)
    assert metrics["sharpness_residual"] < 1e-3 * lam[0]
    # The new state holds the eigenvectors the next call starts from.
    assert jax.tree.leaves(state["eigenvectors"])[0].shape[0] == 2 and bool(state["valid"])
    again, _ = probe(ctx, 5, params, None, state)
    assert again["sharpness"] == pytest.approx(lam[0], rel=1e-4)
    assert again["sharpness_2"] == pytest.approx(lam[1], rel=1e-4)


@pytest.mark.parametrize(
    "config,expected",
    [
        (_config("sgd"), 2 / 0.1),
        (_config("momentum", momentum=0.5), 3 / 0.1),
        (_config("momentum"), 3.8 / 0.1),  # the registry's default momentum, 0.9
        (_config("nesterov", momentum=0.9), 3.8 / (0.1 * 2.8)),
        (_config("sam", rho=0.05, normalize=False), (np.sqrt(1 + 8 * 0.05 / 0.1) - 1) / 0.1),
        (_config("sam", rho=0.05), None),  # normalized SAM: no linear threshold
        (_config("adam"), None),
    ],
)
def test_sharpness_threshold_from_config(config, expected):
    threshold = sharpness_threshold(config.optimizer, 0.1)
    if expected is None:
        assert threshold is None
    else:
        assert threshold == pytest.approx(expected)


def test_sharpness_threshold_with_unnormalized_sam_filter():
    config = _config("sgd")
    config.optimizer.filter = ml_collections.ConfigDict(
        {"name": "sam", "rho": 0.1, "normalize": False}
    )
    assert sharpness_threshold(config.optimizer, 0.2) == pytest.approx((np.sqrt(5.0) - 1) / 0.2)
    config.optimizer.filter = ml_collections.ConfigDict({"name": "grokfast_ema"})
    assert sharpness_threshold(config.optimizer, 0.2) is None


def test_preconditioned_sharpness_probe_with_adam(mlp):
    config = _config("adam", b1=0.9, b2=0.99, eps=1e-3)
    ctx = _context(mlp, config)
    params = _params32(mlp)
    opt_state = ctx.tx.init(params)
    for _ in range(3):
        g = jax.grad(mlp.loss_fn)(params, ctx.train)
        updates, opt_state = ctx.tx.update(g, opt_state, params)
        params = optax.apply_updates(params, updates)
    probe = _built("preconditioned_sharpness", {"every": 1, "num_iters": 40}, ctx)
    metrics, _ = probe(ctx, 3, params, opt_state, probe.init(ctx, params))
    nu = jax.tree.map(np.asarray, opt_state[1][0].nu)
    p = np.concatenate([np.ravel(np.sqrt(x / (1 - 0.99**3)) + 1e-3) for x in jax.tree.leaves(nu)])
    h = _dense(mlp, params)
    expected = np.linalg.eigvalsh(h / np.sqrt(np.outer(p, p)))[-1]
    assert metrics["preconditioned_sharpness"] == pytest.approx(expected, rel=1e-4)
    assert metrics["preconditioned_sharpness_threshold"] == pytest.approx(3.8 / (0.1 * 0.1))


def test_preconditioned_sharpness_needs_an_adaptive_optimizer():
    probe = PROBES.build("preconditioned_sharpness", {"every": 1})
    with pytest.raises(ConfigError, match="optimizer.name in adam, adamw, rmsprop; got 'sgd'"):
        probe.check(_config("sgd"))
    probe.check(_config("adam"))


@pytest.mark.parametrize(
    "name, kwargs, words",
    [
        ("hessian_trace", {"method": "exact"}, "valid choices: hutchinson, hutch++"),
        ("hessian_trace", {"num_probes": 10}, "multiple of 3"),
        ("step_stability", {"k": 5, "num_iters": 3}, "1 <= k <= num_iters"),
        ("sharpness", {"precision": "fp32"}, "valid choices: highest"),
    ],
)
def test_probe_options_are_checked_when_built(name, kwargs, words):
    with pytest.raises(ConfigError, match=re.escape(words)):
        PROBES.build(name, {"every": 1, **kwargs}, where=f"probes.{name}")


def test_step_stability_probe_for_gd(mlp):
    ctx = _context(mlp, _config("sgd", learning_rate=0.5))
    ctx = ProbeContext(**{**ctx.__dict__, "learning_rate": optax.constant_schedule(0.5)})
    params = _params32(mlp)
    probe = _built("step_stability", {"every": 1, "num_iters": 51}, ctx)
    metrics, _ = probe(ctx, 0, params, ctx.tx.init(params), {})
    lam = np.linalg.eigvalsh(_dense(mlp, params))
    assert metrics["step_stability"] == pytest.approx(np.max(np.abs(1 - 0.5 * lam)), rel=1e-4)
    assert metrics["step_stability_threshold"] == 1.0


def test_gradient_overlap_trace_and_density_probes(mlp):
    ctx = _context(mlp, _config("sgd"))
    params = _params32(mlp)
    h = _dense(mlp, params)
    lam, u = np.linalg.eigh(h)
    with jax.enable_x64(True):
        g = mlp.ravel(jax.grad(mlp.loss_fn)(mlp.jax_params(), mlp.jax_data()))
    top = u[:, ::-1][:, :3]
    expected = np.sum((top.T @ g) ** 2) / np.sum(g**2)

    overlap = _built("gradient_overlap", {"every": 1, "k": 3, "num_iters": 51}, ctx)
    metrics, state = overlap(ctx, 0, params, ctx.tx.init(params), overlap.init(ctx, params))
    assert metrics["gradient_overlap"] == pytest.approx(expected, abs=1e-4)
    # For SGD the update is -lr g: the same direction.
    assert metrics["update_overlap"] == pytest.approx(expected, abs=1e-4)
    assert "eigenspace_overlap" not in metrics  # nothing to compare with yet
    # Same parameters again (warm-started): the same eigenspace.
    metrics, _ = overlap(ctx, 1, params, ctx.tx.init(params), state)
    assert metrics["eigenspace_overlap"] == pytest.approx(1.0, abs=1e-4)
    assert metrics["gradient_overlap"] == pytest.approx(expected, abs=1e-4)

    trace = _built("hessian_trace", {"every": 1, "num_probes": 30}, ctx)
    metrics, _ = trace(ctx, 0, params, None, {})
    assert abs(metrics["hessian_trace"] - np.trace(h)) < 3 * metrics["hessian_trace_stderr"]

    density = _built(
        "spectral_density", {"every": 4, "steps": (10, 3), "num_points": 64, "num_iters": 20}, ctx
    )
    # With steps, exactly those steps (not multiples of every), and the loop is told the next one.
    assert [t for t in range(13) if density.due(t)] == [3, 10]
    assert [density.next_due(t) for t in (0, 3, 9)] == [3, 10, 10]
    assert density.next_due(10) > 10**9
    metrics, _ = density(ctx, 10, params, None, {})
    assert len(metrics["spectral_density_grid"]) == len(metrics["spectral_density"]) == 64
    assert np.max(metrics["spectral_density_nodes"]) == pytest.approx(lam[-1], rel=1e-4)


def test_probe_names_salt_their_random_streams():
    """Every registered probe carries its registry name, and its key is crc32(name)-salted."""
    import zlib

    from dynamics.train.probes.base import probe_key

    config = base_config()
    config.seed = 3
    ctx = ProbeContext(*([None] * 9), config=config)
    keys = {}
    for name in PROBES.names():
        fn = PROBES.get(name)
        probe = fn(every=1)
        assert probe.name == name
        key = jax.random.key_data(probe.key(ctx, 7))
        expected = jax.random.fold_in(
            jax.random.fold_in(jax.random.key(3), zlib.crc32(name.encode())), 7
        )
        np.testing.assert_array_equal(key, jax.random.key_data(expected))
        keys[name] = tuple(np.asarray(key).tolist())
    assert len(set(keys.values())) == len(keys)
    np.testing.assert_array_equal(
        jax.random.key_data(probe_key(3, "sharpness", 7)),
        jax.random.key_data(PROBES.get("sharpness")(every=1).key(ctx, 7)),
    )
