"""The shared harness: every name in OPTIMIZERS, FILTERS and CONSTRAINTS obeys the optax contract.

In the style of optax's contrib tests, each registered rule, built with its defaults (plus the
entries of ``TEST_KWARGS``), must: accept extra keyword arguments (``grad_fn=`` is always
passed, as the runner does); not retrace after the first update; give the same updates under
``optax.inject_hyperparams``; keep the parameter dtype (bf16, f32) in its updates and the dtypes
of its state; work under ``optax.MultiSteps`` and inside ``lax.cond``; keep its state sharding
when the parameters are sharded over 8 simulated CPU devices; and decrease the loss of a small
least-squares problem and of a small MLP.

Every check runs ``STEPS`` updates and compares (or inspects) the last one, which must be
non-zero on every leaf: a rule whose first update is trivial (SOAP's first call only sets up its
basis) or whose core path starts late (a refresh period, a warm-up) would otherwise pass by
comparing zeros or a fallback. ``TEST_KWARGS`` sets what makes each rule's core path run within
those steps.

A sample of optax optimizers named by import path (``BY_PATH``) runs through the same checks, as
a config's ``optimizer.name = "optax:lion"`` would build them.

Filters are tested chained before SGD, constraints chained after Adam. A row added to the table
(``dynamics.optim.registry.TABLE``) is picked up here automatically, and its ``extra_args`` are
checked against what its ``update`` needs; if its core path does not run within ``STEPS``
updates at its defaults, add arguments to ``TEST_KWARGS``.
"""

import functools
import inspect
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from dynamics.optim import CONSTRAINTS, FILTERS, OPTIMIZERS, TABLE

# Updates run by every check; the last one is compared.
STEPS = 3

# Non-default constructor arguments used by the harness, keyed by (kind, name), so that the core
# path of each rule runs within STEPS updates on the (8, 16) and (16, 8) kernels of the MLP.
# Rotated sides are limited to the 8-long one, whose statistic G G^T has full rank: its
# eigenbasis is then unique up to column signs, which these rules' updates do not depend on,
# so jitted and eager runs agree (a null-space basis is arbitrary and would not).
# The other rules need nothing: the Muon family, Scion and the Lipschitz constraints act at
# every step; kron refits its preconditioner with probability 1 for its first 500 steps; adago's
# clipping and AdaGrad step, the sharpness-aware perturbations and the other filters act from
# step 1.
TEST_KWARGS = {
    # Call 1 takes the basis from eigh (and returns zeros), calls 2-3 run Adam in it and
    # refresh it by power iteration + QR; call 3 uses the refreshed basis.
    ("optimizer", "soap"): {"max_precond_dim": 8, "precondition_frequency": 1},
    # Inverse roots by eigh at steps 1 and 3; step 2 uses the stored ones. The ridge is raised
    # from 1e-6 to 1e-3 lambda_max: after step 1 the 16 x 16 statistics have rank 8, and on
    # their null space the default root (1e-6 lambda_max + float32 round-off ~1e-7
    # lambda_max)^(-1/4) is set by round-off, so the stale roots meet step 2's gradient with a
    # factor that differs by percents between jitted and eager runs (6e-4 on updates of 5e-2;
    # 1e-6 with the larger ridge). The float64 NumPy test covers the default ridge.
    ("optimizer", "shampoo"): {
        "start_preconditioning_step": 1,
        "precondition_every": 2,
        "matrix_eps": 1e-3,
    },
    # Step 1 is sign descent in the identity basis; steps 2-3 use the eigh basis of step 1.
    ("optimizer", "splus"): {"max_dim": 8},
    # SVD basis of the momentum at steps 1 and 3, reused at step 2.
    ("optimizer", "conda"): {"update_proj_gap": 2},
    # The default window (100) passes gradients unchanged for 99 steps (the warm-up).
    ("filter", "grokfast_ma"): {"window": 2},
}

# Learning rates for the loss-decrease test where the default (0.05) does not suit a rule.
LEARNING_RATES = {
    ("optimizer", "auon"): 0.3,
    ("optimizer", "auon_hybrid"): 0.3,
    ("optimizer", "sgd"): 0.1,
    ("optimizer", "adago"): 0.2,
}

# optax rules by import path: sign momentum, schedule-free, a belief-based Adam, trust ratios.
BY_PATH = ("optax:lion", "optax.contrib:schedule_free_adamw", "optax:adabelief", "optax:lamb")

CASES = (
    [("optimizer", n) for n in OPTIMIZERS.names()]
    + [("optimizer", n) for n in BY_PATH]
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


def assert_trees_close(a, b, rtol=1e-4, atol=1e-5):
    """Agreement of STEPS float32 updates computed two ways (jitted or eager, hyperparameters as
    Python floats or arrays: ``1 - 0.999`` alone differs by 1e-5 relative between float64 and
    float32), relative to updates of size ``lr = 0.05``; a wrong rule is off by O(1)."""
    jax.tree.map(
        lambda x, y: np.testing.assert_allclose(
            np.asarray(x, np.float32), np.asarray(y, np.float32), rtol=rtol, atol=atol
        ),
        a,
        b,
    )


def assert_nonzero(updates):
    """Every leaf of the compared update moves: the check does not compare zeros."""
    moved = {
        jax.tree_util.keystr(k): bool(jnp.any(u != 0))
        for k, u in jax.tree.leaves_with_path(updates)
    }
    assert all(moved.values()), moved


@functools.cache
def eager_trajectory(kind, name):
    """Reference run without jit (primitive compilations are shared by all cases).

    Returns, for each of the STEPS updates from ``init_mlp()``, the ``(params, state)`` it
    started from and the updates it returned; computed once per rule and shared by the checks.
    """
    tx = optax.with_extra_args_support(build(kind, name))
    params = init_mlp()
    state = tx.init(params)
    out = []
    for _ in range(STEPS):
        updates, new_state = tx.update(grad_mlp(params), state, params, grad_fn=grad_mlp)
        out.append((params, state, updates))
        params, state = optax.apply_updates(params, updates), new_state
    return out


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
    for _ in range(STEPS):
        updates, new_state = update(grad_mlp(params), state, params)
        params = optax.apply_updates(params, updates)
        assert [x.dtype for x in jax.tree.leaves(new_state)] == [
            x.dtype for x in jax.tree.leaves(state)
        ]
        state = new_state
    assert len(traces) == 1
    assert jax.tree.map(lambda u: u.dtype, updates) == jax.tree.map(lambda p: p.dtype, params)
    assert all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates))
    assert_nonzero(updates)


@pytest.mark.parametrize("kind,name", CASES, ids=IDS)
def test_inject_hyperparams_gives_same_updates(kind, name):
    *_, expected = eager_trajectory(kind, name)[-1]
    tx = optax.with_extra_args_support(build(kind, name, inject=True))
    update = jax.jit(functools.partial(tx.update, grad_fn=grad_mlp))
    params = init_mlp()
    state = tx.init(params)
    for _ in range(STEPS):
        updates, state = update(grad_mlp(params), state, params)
        params = optax.apply_updates(params, updates)
    assert_nonzero(expected)
    assert_trees_close(updates, expected)


@pytest.mark.parametrize("kind,name", CASES, ids=IDS)
def test_bf16_preserved(kind, name):
    tx = optax.with_extra_args_support(build(kind, name))
    params = init_mlp(jnp.bfloat16)
    state = tx.init(params)
    update = jax.jit(functools.partial(tx.update, grad_fn=grad_mlp))
    dtypes = lambda tree: [x.dtype for x in jax.tree.leaves(tree)]  # noqa: E731
    for _ in range(STEPS):
        updates, new_state = update(grad_mlp(params), state, params)
        assert jax.tree.map(lambda u: u.dtype, updates) == jax.tree.map(lambda p: p.dtype, params)
        assert dtypes(new_state) == dtypes(state)
        params, state = optax.apply_updates(params, updates), new_state
    assert all(bool(jnp.all(jnp.isfinite(u.astype(jnp.float32)))) for u in jax.tree.leaves(updates))
    assert_nonzero(updates)


@pytest.mark.parametrize("kind,name", CASES, ids=IDS)
def test_multisteps_averages_gradients(kind, name):
    """Each gradient fed twice under MultiSteps(every_k_schedule=2) == one plain step."""
    *_, expected = eager_trajectory(kind, name)[-1]
    multi = optax.MultiSteps(build(kind, name), every_k_schedule=2)
    params = init_mlp()
    state = multi.init(params)
    update = jax.jit(functools.partial(multi.update, grad_fn=grad_mlp))
    for _ in range(STEPS):
        grads = grad_mlp(params)
        first, state = update(grads, state, params)
        assert all(bool(jnp.all(u == 0)) for u in jax.tree.leaves(first))
        second, state = update(grads, state, params)
        params = optax.apply_updates(params, second)
    assert_nonzero(second)
    assert_trees_close(second, expected)


@pytest.mark.parametrize("kind,name", CASES, ids=IDS)
def test_inside_lax_cond(kind, name):
    """From the state after STEPS - 1 eager updates, the taken branch gives the next update."""
    tx = optax.with_extra_args_support(build(kind, name))
    trajectory = eager_trajectory(kind, name)
    params, state, direct = trajectory[-1]
    grads = grad_mlp(params)

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
    assert_nonzero(direct)
    assert_trees_close(taken, direct)
    assert all(bool(jnp.all(u == 0)) for u in jax.tree.leaves(skipped))
    assert_trees_close(kept, state, rtol=0, atol=0)


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
    step = jax.jit(step)
    path = [(params, tx.init(params))]
    for _ in range(STEPS):
        path.append(step(*path[-1]))
    (before, _), (final, _) = path[-2:]
    for p, q in zip(jax.tree.leaves(params), jax.tree.leaves(final), strict=True):
        assert layout(q) == layout(p), (p.sharding, q.sharding)
    param_shapes = {p.shape for p in jax.tree.leaves(params)}
    states = [jax.tree.leaves(state) for _, state in path]
    for history in zip(*states, strict=True):  # one state leaf through the steps
        for prev, cur in itertools.pairwise(history[1:]):
            assert layout(cur) == layout(prev), (prev.sharding, cur.sharding)
        s0, s1 = history[:2]
        if s0.shape in param_shapes and not s0.is_fully_replicated:
            assert layout(s1) == layout(s0), (s0.sharding, s1.sharding)
    assert all(bool(jnp.all(jnp.isfinite(q))) for q in jax.tree.leaves(final))
    assert_nonzero(jax.tree.map(jnp.subtract, final, before))


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


def test_the_table_is_the_registries():
    """OPTIMIZERS, FILTERS and CONSTRAINTS are built from the one table: same names, same
    constructors."""
    for kind, registry in (
        ("optimizer", OPTIMIZERS),
        ("filter", FILTERS),
        ("constraint", CONSTRAINTS),
    ):
        assert registry.names() == sorted(TABLE[kind])
        for name, component in TABLE[kind].items():
            assert registry.get(name) is component.build


@pytest.mark.parametrize("kind,name", CASES, ids=IDS)
def test_declared_extra_args(kind, name):
    """A rule whose row declares ``grad_fn`` refuses to run without it; every other rule runs
    without any extra argument (so the table's ``extra_args`` is what the rule reads)."""
    tx = build(kind, name)
    params = init_mlp()
    state = tx.init(params)
    grads = grad_mlp(params)
    row = TABLE[kind].get(name)  # None for a rule by import path: it reads no extra argument
    if row is not None and "grad_fn" in row.extra_args:
        with pytest.raises(ValueError, match="grad_fn"):
            tx.update(grads, state, params)
    else:
        updates, _ = tx.update(grads, state, params)
        assert jax.tree.structure(updates) == jax.tree.structure(params)
