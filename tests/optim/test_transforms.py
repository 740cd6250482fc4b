"""The shared harness: every name in OPTIMIZERS, FILTERS and CONSTRAINTS obeys the optax contract.

In the style of optax's contrib tests, each registered rule, built with its defaults (plus the
entries of ``TEST_KWARGS``), must: accept extra keyword arguments (``grad_fn=`` is always
passed, as the runner does); not retrace on the second update; give the same updates under
``optax.inject_hyperparams``; keep the parameter dtype (bf16, f32) in its updates and the dtypes
of its state; work under ``optax.MultiSteps`` and inside ``lax.cond``; keep its state sharding
when the parameters are sharded over 8 simulated CPU devices; and decrease the loss of a small
least-squares problem and of a small MLP.

Filters are tested chained before SGD, constraints chained after Adam. A rule added to a
registry anywhere in ``dynamics.optim`` is picked up here automatically; if it needs non-default
arguments to be cheap (e.g. a refresh period), add them to ``TEST_KWARGS``.
"""

import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from dynamics.optim import CONSTRAINTS, FILTERS, OPTIMIZERS

# Non-default constructor arguments used by the harness, keyed by (kind, name).
TEST_KWARGS = {
    ("optimizer", "soap"): {"max_precond_dim": 0},
    ("optimizer", "splus"): {"max_dim": 8},
    ("optimizer", "conda"): {"update_proj_gap": 3},
}

# Learning rates for the loss-decrease test where the default (0.05) does not suit a rule.
LEARNING_RATES = {
    ("optimizer", "auon"): 0.3,
    ("optimizer", "auon_hybrid"): 0.3,
    ("optimizer", "sgd"): 0.1,
    ("optimizer", "adago"): 0.2,
}

CASES = (
    [("optimizer", n) for n in OPTIMIZERS.names()]
    + [("filter", n) for n in FILTERS.names()]
    + [("constraint", n) for n in CONSTRAINTS.names()]
)
IDS = [f"{kind}:{name}" for kind, name in CASES]


def _inject(fn):
    """``optax.inject_hyperparams`` with integer arguments (steps, periods, axes) kept static.

    inject_hyperparams turns every numeric default into an array; integers are structural
    (loop lengths, refresh periods, axis counts), so they stay Python values, as a user would
    pass them in ``static_args``.
    """
    static = tuple(
        n
        for n, p in inspect.signature(fn).parameters.items()
        if isinstance(p.default, int) and not isinstance(p.default, bool)
    )
    return optax.inject_hyperparams(fn, static_args=static)


def build(kind, name, learning_rate=0.05, inject=False):
    """The transform under test; with ``inject`` its constructor goes through inject_hyperparams."""
    kwargs = dict(TEST_KWARGS.get((kind, name), {}))
    if kind == "optimizer":
        fn = OPTIMIZERS.get(name)
        if inject:
            return _inject(fn)(learning_rate=learning_rate, **kwargs)
        return fn(learning_rate, **kwargs)
    registry = FILTERS if kind == "filter" else CONSTRAINTS
    fn = registry.get(name)
    tx = _inject(fn)(**kwargs) if inject else fn(**kwargs)
    if kind == "filter":
        return optax.chain(tx, optax.sgd(learning_rate))
    return optax.chain(optax.adam(learning_rate), tx)


# A teacher-student regression: inputs (32, 8), a two-layer tanh teacher with small weights so
# that the Lipschitz-constrained rules can fit it too.
_rng = np.random.default_rng(0)
X = jnp.asarray(_rng.normal(size=(32, 8)), jnp.float32)
_T1 = _rng.normal(size=(8, 16)) / 8
_T2 = _rng.normal(size=(16, 8)) / 8
Y = jnp.asarray(np.tanh(np.asarray(X) @ _T1) @ _T2, jnp.float32)


def init_mlp(dtype=jnp.float32, seed=1):
    r = np.random.default_rng(seed)
    return {
        "w1": jnp.asarray(0.3 * r.normal(size=(8, 16)), dtype),
        "b1": jnp.zeros((16,), dtype),
        "w2": jnp.asarray(0.3 * r.normal(size=(16, 8)), dtype),
        "b2": jnp.zeros((8,), dtype),
    }


def mlp_loss(p, x=X, y=Y):
    h = jnp.tanh(x.astype(p["w1"].dtype) @ p["w1"] + p["b1"])
    out = h @ p["w2"] + p["b2"]
    return 0.5 * jnp.mean(jnp.sum(jnp.square(out.astype(jnp.float32) - y), axis=-1))


def init_linear(seed=2):
    r = np.random.default_rng(seed)
    return {"w": jnp.asarray(0.1 * r.normal(size=(8, 8)), jnp.float32), "b": jnp.zeros((8,))}


_W_LS = jnp.asarray(_rng.normal(size=(8, 8)) / 8, jnp.float32)


def ls_loss(p):
    return 0.5 * jnp.mean(jnp.sum(jnp.square(X @ p["w"] + p["b"] - X @ _W_LS), axis=-1))


grad_mlp = jax.grad(mlp_loss)


def make_update(tx, loss=mlp_loss):
    """``(params, state) -> (params, state)``: one runner-style step with ``grad_fn`` passed."""
    tx = optax.with_extra_args_support(tx)
    grad_fn = jax.grad(loss)

    def step(params, state):
        grads = grad_fn(params)
        updates, state = tx.update(grads, state, params, grad_fn=grad_fn)
        return optax.apply_updates(params, updates), state

    return tx, step


def assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
    jax.tree.map(
        lambda x, y: np.testing.assert_allclose(
            np.asarray(x, np.float32), np.asarray(y, np.float32), rtol=rtol, atol=atol
        ),
        a,
        b,
    )


def eager_update(kind, name, params, steps=1):
    """Reference updates computed without jit (primitive compilations are shared by all cases)."""
    tx = optax.with_extra_args_support(build(kind, name))
    state = tx.init(params)
    for _ in range(steps):
        updates, state = tx.update(grad_mlp(params), state, params, grad_fn=grad_mlp)
        params = optax.apply_updates(params, updates)
    return updates, state, params


@pytest.mark.parametrize("kind,name", CASES, ids=IDS)
def test_extra_args_no_retrace_f32(kind, name):
    tx = optax.with_extra_args_support(build(kind, name))
    params = init_mlp()
    traces = []

    @jax.jit
    def update(grads, state, params):
        traces.append(None)
        return tx.update(grads, state, params, grad_fn=grad_mlp, unused_extra_arg=1.0)

    state = tx.init(params)
    for _ in range(2):
        updates, new_state = update(grad_mlp(params), state, params)
        params = optax.apply_updates(params, updates)
        assert [x.dtype for x in jax.tree.leaves(new_state)] == [
            x.dtype for x in jax.tree.leaves(state)
        ]
        state = new_state
    assert len(traces) == 1
    assert jax.tree.map(lambda u: u.dtype, updates) == jax.tree.map(lambda p: p.dtype, params)
    assert all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates))


@pytest.mark.parametrize("kind,name", CASES, ids=IDS)
def test_inject_hyperparams_gives_same_updates(kind, name):
    params = init_mlp()
    _, _, expected = eager_update(kind, name, params, steps=2)
    tx, step = make_update(build(kind, name, inject=True))
    p, s = params, tx.init(params)
    for _ in range(2):
        p, s = jax.jit(step)(p, s)
    assert_trees_close(p, expected)


@pytest.mark.parametrize("kind,name", CASES, ids=IDS)
def test_bf16_preserved(kind, name):
    tx = optax.with_extra_args_support(build(kind, name))
    params = init_mlp(jnp.bfloat16)
    state = tx.init(params)
    grads = grad_mlp(params)
    updates, new_state = jax.jit(functools.partial(tx.update, grad_fn=grad_mlp))(
        grads, state, params
    )
    assert jax.tree.map(lambda u: u.dtype, updates) == jax.tree.map(lambda p: p.dtype, params)
    dtypes = lambda tree: [x.dtype for x in jax.tree.leaves(tree)]  # noqa: E731
    assert dtypes(new_state) == dtypes(state)
    assert all(bool(jnp.all(jnp.isfinite(u.astype(jnp.float32)))) for u in jax.tree.leaves(updates))


@pytest.mark.parametrize("kind,name", CASES, ids=IDS)
def test_multisteps_averages_gradients(kind, name):
    """Two micro-steps of the same gradient under MultiSteps == one plain step."""
    params = init_mlp()
    grads = grad_mlp(params)
    expected, _, _ = eager_update(kind, name, params)
    multi = optax.MultiSteps(build(kind, name), every_k_schedule=2)
    state = multi.init(params)
    update = jax.jit(functools.partial(multi.update, grad_fn=grad_mlp))
    first, state = update(grads, state, params)
    assert all(bool(jnp.all(u == 0)) for u in jax.tree.leaves(first))
    second, state = update(grads, state, params)
    assert_trees_close(second, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind,name", CASES, ids=IDS)
def test_inside_lax_cond(kind, name):
    tx = optax.with_extra_args_support(build(kind, name))
    params = init_mlp()
    grads = grad_mlp(params)
    state = tx.init(params)

    @jax.jit
    def maybe_update(pred, state):
        return jax.lax.cond(
            pred,
            lambda s: tx.update(grads, s, params, grad_fn=grad_mlp),
            lambda s: (jax.tree.map(jnp.zeros_like, grads), s),
            state,
        )

    taken, _ = maybe_update(True, state)
    skipped, kept = maybe_update(False, state)
    direct, _, _ = eager_update(kind, name, params)
    assert_trees_close(taken, direct, rtol=1e-4, atol=1e-6)
    assert all(bool(jnp.all(u == 0)) for u in jax.tree.leaves(skipped))
    assert_trees_close(kept, state)


@pytest.fixture(scope="module")
def mesh():
    return Mesh(np.array(jax.devices()[:8]), ("model",))


def layout(array):
    """``"replicated"`` or the partition spec padded to the array's rank."""
    if array.sharding.is_fully_replicated:
        return "replicated"
    spec = tuple(array.sharding.spec)
    return spec + (None,) * (array.ndim - len(spec))


@pytest.mark.parametrize("kind,name", CASES, ids=IDS)
def test_state_sharding_stable(kind, name, mesh):
    """With sharded params, the state's layout is a fixed point of the step (no resharding).

    The state is built eagerly, as a user does, so leaves shaped like a parameter inherit its
    sharding; after the first step GSPMD may choose layouts for the other leaves (a rotation
    basis, per-neuron statistics), which must then stay put.
    """
    specs = {"w1": P(None, "model"), "b1": P("model"), "w2": P("model", None), "b2": P()}
    params = jax.device_put(init_mlp(), {k: NamedSharding(mesh, s) for k, s in specs.items()})
    tx, step = make_update(build(kind, name))
    state0 = tx.init(params)
    step = jax.jit(step)
    params1, state1 = step(params, state0)
    params2, state2 = step(params1, state1)
    for p, q in zip(jax.tree.leaves(params), jax.tree.leaves(params2), strict=True):
        assert layout(q) == layout(p), (p.sharding, q.sharding)
    for s0, s1, s2 in zip(*(jax.tree.leaves(s) for s in (state0, state1, state2)), strict=True):
        assert layout(s2) == layout(s1), (s1.sharding, s2.sharding)
        if s0.shape in {p.shape for p in jax.tree.leaves(params)} and not s0.is_fully_replicated:
            assert layout(s1) == layout(s0), (s0.sharding, s1.sharding)
    assert all(bool(jnp.all(jnp.isfinite(q))) for q in jax.tree.leaves(params2))


@pytest.mark.parametrize("kind,name", CASES, ids=IDS)
def test_reduces_loss(kind, name):
    """100 steps halve the loss of a least-squares problem and of a small MLP (one compile)."""
    lr = LEARNING_RATES.get((kind, name), 0.05)
    problems = {"least_squares": (ls_loss, init_linear()), "mlp": (mlp_loss, init_mlp())}

    def run(loss, params):
        tx, step = make_update(build(kind, name, lr), loss)
        carry = (params, tx.init(params))
        (params, _), _ = jax.lax.scan(lambda c, _: (step(*c), None), carry, length=100)
        return params

    finals = jax.jit(lambda: {k: run(*v) for k, v in problems.items()})()
    for key, (loss, params) in problems.items():
        start, end = float(loss(params)), float(loss(finals[key]))
        assert end < 0.5 * start, (key, start, end)
