"""Orthogonalized rules vs float64 NumPy re-derivations written from the papers' formulas.

Each rule runs 3 steps in float64 (``jax.enable_x64``) with the exact SVD polar factor (or the
Newton-Schulz quintic re-implemented here), and is compared with the same recursion written in
NumPy. Also: singular-value bands of Newton-Schulz / Polar Express, the exact polar factor from
enough Polar Express steps, and ``muon == optax.contrib.muon`` with matching conventions.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dynamics.optim import (
    OPTIMIZERS,
    conda,
    default_labels,
    muon,
    newton_schulz,
    polar_express,
    scale_by_adago,
    scale_by_adamuon,
    scale_by_auon,
    scale_by_conda,
    scale_by_muon,
    scale_by_normuon,
    scale_by_scion,
    scion,
    spectral_cap,
    spectral_hammer,
    spectral_normalize,
    spectral_weight_decay,
    svd_polar,
)

RNG = np.random.default_rng(0)
SHAPES = {"wide": (6, 10), "tall": (10, 6)}
GRADS = {k: [RNG.normal(size=s) for _ in range(3)] for k, s in SHAPES.items()}

# The coefficients as printed in the papers / reference code, typed here independently.
MUON_ABC = [(3.4445, -4.7750, 2.0315)] * 5
PE_RAW = [
    (8.28721201814563, -23.595886519098837, 17.300387312530933),
    (4.107059111542203, -2.9478499167379106, 0.5448431082926601),
    (3.9486908534822946, -2.908902115962949, 0.5518191394370137),
    (3.3184196573706015, -2.488488024314874, 0.51004894012372),
    (2.300652019954817, -1.6689039845747493, 0.4188073119525673),
    (1.891301407787398, -1.2679958271945868, 0.37680408948524835),
    (1.8750014808534479, -1.2500016453999487, 0.3750001645474248),
    (1.875, -1.25, 0.375),
]
PE_ABC = [(a / 1.01, b / 1.01**3, c / 1.01**5) for a, b, c in PE_RAW[:-1]] + [PE_RAW[-1]]


def np_polar(x):
    u, _, vt = np.linalg.svd(x, full_matrices=False)
    return u @ vt


def np_ns(x, abc, safety=1.0, eps=1e-7):
    """X <- a X + b (X X^T) X + c (X X^T)^2 X on the wide orientation, from the paper."""
    tall = x.shape[0] > x.shape[1]
    X = x.T if tall else x
    X = X / (safety * np.linalg.norm(X) + eps)
    for a, b, c in abc:
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return X.T if tall else X


def np_poly_band(abc, lo, safety=1.0):
    """Image of normalized singular values in [lo, 1] under the composed scalar quintics."""
    s = np.linspace(lo / safety, 1.0 / safety, 20001)
    for a, b, c in abc:
        s = a * s + b * s**3 + c * s**5
    return s.min(), s.max()


def with_singular_values(shape, sv, seed=0):
    r = np.random.default_rng(seed)
    u, _ = np.linalg.qr(r.normal(size=(shape[0], len(sv))))
    v, _ = np.linalg.qr(r.normal(size=(shape[1], len(sv))))
    return (u * sv) @ v.T


def run_rule(tx, grads, params=None):
    """3 updates of a transform on a single-leaf tree, in float64."""
    params = {"w": jnp.asarray(params if params is not None else np.zeros_like(grads[0]))}
    state = tx.init(params)
    out = []
    for g in grads:
        u, state = tx.update({"w": jnp.asarray(g)}, state, params)
        out.append(np.asarray(u["w"]))
    return out


def assert_steps(got, want, rtol=1e-9, atol=1e-11):
    for t, (a, b) in enumerate(zip(got, want, strict=True)):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=f"step {t + 1}")


# ------------------------------------------------------------------------- orthogonalizers
@pytest.mark.parametrize("shape", [(32, 16), (16, 32)])
def test_newton_schulz_singular_values_in_promised_band(shape):
    # Singular values spread over [0.05, 1] x scale; after Frobenius normalization the smallest
    # is >= 0.05 / sqrt(sum s^2), which sets the lower end of the scalar band.
    sv = np.geomspace(0.05, 1.0, 16) * 3.0
    x = with_singular_values(shape, sv)
    lo = sv.min() / np.sqrt(np.sum(sv**2))
    band = np_poly_band(MUON_ABC, lo)
    s = np.linalg.svd(np.asarray(newton_schulz(jnp.asarray(x, jnp.float32))), compute_uv=False)
    assert band[0] - 1e-3 <= s.min() and s.max() <= band[1] + 1e-3, (band, s.min(), s.max())
    # Muon's quintic promises roughly [0.7, 1.2] once the iteration has settled.
    assert band[0] > 0.6 and band[1] < 1.25


def test_polar_express_band_and_exact_polar_factor():
    sv = np.geomspace(1e-3, 1.0, 16)
    x = with_singular_values((40, 16), sv, seed=1)
    lo = sv.min() / np.sqrt(np.sum(sv**2))
    band = np_poly_band(PE_ABC, lo, safety=1.01)
    s = np.linalg.svd(np.asarray(polar_express(jnp.asarray(x), steps=8)), compute_uv=False)
    assert band[0] - 1e-3 <= s.min() and s.max() <= band[1] + 1e-3, (band, s.min(), s.max())
    assert 1 - band[0] < 0.05 and band[1] - 1 < 0.01
    # Past 8 steps the tail quintic (15 - 10 s^2 + 3 s^4) s / 8 converges to the polar factor.
    o = np.asarray(polar_express(jnp.asarray(x, jnp.float32), steps=12))
    np.testing.assert_allclose(o, np_polar(x), atol=2e-5)


def test_newton_schulz_matches_numpy_float64_batched_and_dtype():
    x = RNG.normal(size=(3, 12, 7))
    with jax.enable_x64(True):
        got = np.asarray(newton_schulz(jnp.asarray(x), dtype=jnp.float64))
        pe = np.asarray(polar_express(jnp.asarray(x), steps=6, dtype=jnp.float64))
    for i in range(3):
        np.testing.assert_allclose(got[i], np_ns(x[i], MUON_ABC), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(pe[i], np_ns(x[i], PE_ABC[:6], 1.01), rtol=1e-9, atol=1e-12)
    assert newton_schulz(jnp.ones((4, 8), jnp.bfloat16)).dtype == jnp.bfloat16
    with jax.enable_x64(True):
        np.testing.assert_allclose(np.asarray(svd_polar(jnp.asarray(x[0]))), np_polar(x[0]))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the CPU default dtype")
def test_newton_schulz_default_dtype_never_below_the_input_on_cpu():
    """dtype=None: a float64 input computes in float64 (not float32: 7e-7 off the float64
    reference before), float32 in float32; Muon's default orthogonalizer inherits it."""
    x = RNG.normal(size=(12, 7))
    want = np_ns(x, MUON_ABC)
    with jax.enable_x64(True):
        got = np.asarray(newton_schulz(jnp.asarray(x)))
        as_f32 = np.asarray(newton_schulz(jnp.asarray(x), dtype=jnp.float32))
        u, _ = scale_by_muon(scaling="none", nesterov=False, beta=0.0).update(
            {"w": jnp.asarray(x)}, scale_by_muon().init({"w": jnp.asarray(x)})
        )
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(np.asarray(u["w"]), want, rtol=1e-12, atol=1e-13)
    assert np.max(np.abs(as_f32 - want)) > 1e-8  # float32 products are measurably coarser
    y = newton_schulz(jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(np.asarray(y), want, atol=1e-5)
    assert y.dtype == jnp.float32


def test_newton_schulz_bf16_applies_the_exact_coefficients():
    """In bf16 only the matrix operands are rounded: a step applies Muon's exact quintic, not the
    one with bf16-rounded coefficients (3.4375, -4.78125, 2.03125).

    The two float64 references differ by ~0.2% of the output, less than bf16's element-wise
    rounding, so the test projects the output's deviation from the exact-coefficient reference
    onto the difference of the references: unbiased rounding noise is nearly orthogonal to it,
    giving ~0 for exact coefficients and ~1 for rounded ones.
    """
    bf16 = jnp.bfloat16
    x = RNG.normal(size=(128, 256)).astype(bf16).astype(np.float64)  # bf16-representable
    out = newton_schulz(jnp.asarray(x, bf16), steps=1, dtype=bf16)
    assert out.dtype == bf16
    out = np.asarray(out.astype(jnp.float32), np.float64)
    # The step's input as the code forms it: normalized in float32, then rounded to bf16.
    x0 = (x / (np.linalg.norm(x) + 1e-7)).astype(bf16).astype(np.float64)

    def quintic(X, a, b, c):
        A = X @ X.T
        return a * X + (b * A + c * A @ A) @ X

    rounded_abc = [float(np.float64(v).astype(bf16)) for v in MUON_ABC[0]]
    assert rounded_abc == [3.4375, -4.78125, 2.03125]
    exact = quintic(x0, *MUON_ABC[0])
    delta = quintic(x0, *rounded_abc) - exact
    projection = np.vdot(out - exact, delta) / np.vdot(delta, delta)
    assert abs(projection) < 0.2, projection
    assert np.linalg.norm(out - exact) < 2**-8 * np.linalg.norm(exact)


# ------------------------------------------------------------------------------------ muon
def np_muon(grads, beta, nesterov, orth, scale):
    m = np.zeros_like(grads[0])
    out = []
    for g in grads:
        m = beta * m + (1 - beta) * g
        u = (1 - beta) * g + beta * m if nesterov else m
        out.append(scale * orth(u))
    return out


@pytest.mark.parametrize("kind", ["wide", "tall"])
@pytest.mark.parametrize(
    "scaling,nesterov",
    [
        ("shape", True),
        ("consistent_rms", False),
        ("spectral", True),
        ("unit_rms", True),
        ("none", False),
    ],
)
def test_muon_matches_numpy(kind, scaling, nesterov):
    fan_in, fan_out = SHAPES[kind]
    scale = {
        "shape": math.sqrt(max(1, fan_out / fan_in)),
        "consistent_rms": 0.2 * math.sqrt(max(fan_in, fan_out)),
        # Issue 4's name for Moonlight's consistent-RMS factor: the same 0.2 sqrt(max(m, n)).
        "spectral": 0.2 * math.sqrt(max(fan_in, fan_out)),
        "unit_rms": math.sqrt(fan_out / fan_in),
        "none": 1.0,
    }[scaling]
    with jax.enable_x64(True):
        got = run_rule(
            scale_by_muon(orthogonalizer="svd", scaling=scaling, nesterov=nesterov), GRADS[kind]
        )
        ns = run_rule(scale_by_muon(compute_dtype=jnp.float64, scaling=scaling), GRADS[kind])
    assert_steps(got, np_muon(GRADS[kind], 0.95, nesterov, np_polar, scale))
    ns_ref = np_muon(GRADS[kind], 0.95, True, lambda u: np_ns(u, MUON_ABC), scale)
    assert_steps(ns, ns_ref, rtol=1e-8, atol=1e-10)


def test_muon_layout_batching_and_conv_rules():
    g = RNG.normal(size=(4, 16))
    with jax.enable_x64(True):
        flax = run_rule(scale_by_muon(orthogonalizer="svd"), [g])[0]
        torch = run_rule(scale_by_muon(orthogonalizer="svd", layout="out_in"), [g.T])[0]
        stack = RNG.normal(size=(3, 4, 16))
        batched = run_rule(scale_by_muon(orthogonalizer="svd", batch_ndim=1), [stack])[0]
        conv = RNG.normal(size=(3, 3, 2, 4))
        conv_u = run_rule(scale_by_muon(orthogonalizer="svd"), [conv])[0]
    # (in=4, out=16): factor sqrt(16/4) = 2 in both layouts.
    np.testing.assert_allclose(flax, 2 * np_polar(g))  # step 1: u is a multiple of g
    np.testing.assert_allclose(torch, flax.T)
    for i in range(3):
        np.testing.assert_allclose(batched[i], 2 * np_polar(stack[i]))
    flat = conv.reshape(18, 4)
    np.testing.assert_allclose(conv_u.reshape(18, 4), np_polar(flat))


def test_muon_equals_optax_contrib_muon():
    params = {
        "w": jnp.asarray(RNG.normal(size=(16, 32)), jnp.float32),
        "v": jnp.asarray(RNG.normal(size=(32, 8)), jnp.float32),
        "b": jnp.zeros((8,), jnp.float32),
    }
    ours = muon(0.02, bias_correction=True, eps=1e-8, compute_dtype=jnp.float32, weight_decay=0.1)
    ref = optax.contrib.muon(0.02, weight_decay=0.1)
    s1, s2 = ours.init(params), ref.init(params)
    p1 = p2 = params
    for t in range(3):
        g = jax.tree.map(lambda x: jax.random.normal(jax.random.key(t), x.shape), params)
        u1, s1 = jax.jit(ours.update)(g, s1, p1)
        u2, s2 = jax.jit(ref.update)(g, s2, p2)
        p1, p2 = optax.apply_updates(p1, u1), optax.apply_updates(p2, u2)
        # optax's non-matrix fallback is NAdam; ours is AdamW, so only matrices are compared.
        for k in ("w", "v"):
            np.testing.assert_allclose(p1[k], p2[k], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("route", ["transform", "config"])
def test_alias_decoupled_weight_decay_and_fallback(route):
    """The non-matrix leaves go to the fallback transform; a config names its AdamW fields."""
    p_np = {"w": RNG.normal(size=(6, 10)), "b": RNG.normal(size=(10,))}
    g_np = {"w": RNG.normal(size=(6, 10)), "b": RNG.normal(size=(10,))}
    with jax.enable_x64(True):
        p, g = jax.tree.map(jnp.asarray, p_np), jax.tree.map(jnp.asarray, g_np)
        adamw = optax.adamw(0.05, b1=0.8, weight_decay=0.2)
        if route == "transform":
            tx = muon(0.1, weight_decay=0.5, orthogonalizer="svd", fallback=adamw)
        else:
            fields = dict(adam_learning_rate=0.05, adam_b1=0.8, adam_weight_decay=0.2)
            kwargs = dict(learning_rate=0.1, weight_decay=0.5, orthogonalizer="svd", **fields)
            tx = OPTIMIZERS.build("muon", kwargs, "optimizer")
        u, _ = tx.update(g, tx.init(p), p)
        adam_u, _ = adamw.update({"b": g["b"]}, adamw.init({"b": p["b"]}), {"b": p["b"]})
    expected_w = -0.1 * (
        math.sqrt(10 / 6) * np_polar(np.asarray(g["w"])) + 0.5 * np.asarray(p["w"])
    )
    np.testing.assert_allclose(u["w"], expected_w, rtol=1e-10)
    np.testing.assert_allclose(u["b"], adam_u["b"], rtol=1e-10)


# ----------------------------------------------------------------------- AdaMuon, NorMuon
@pytest.mark.parametrize("sign_stabilize", [False, True])
def test_adamuon_matches_numpy(sign_stabilize):
    grads = GRADS["tall"]
    b, b2, eps = 0.95, 0.999, 1e-8
    m, v, want = 0.0, 0.0, []
    for t, g in enumerate(grads, 1):
        m = b * m + (1 - b) * g
        u = (1 - b) * g + b * m
        o = np_polar(np.sign(u) if sign_stabilize else u)
        v = b2 * v + (1 - b2) * o**2
        o = o / (np.sqrt(v / (1 - b2**t)) + eps)
        want.append(o * 0.2 * np.sqrt(o.size) / np.linalg.norm(o))
    with jax.enable_x64(True):
        got = run_rule(scale_by_adamuon(orthogonalizer="svd", sign_stabilize=sign_stabilize), grads)
    assert_steps(got, want)
    assert abs(np.sqrt(np.mean(got[-1] ** 2)) - 0.2) < 1e-12


@pytest.mark.parametrize("layout", ["in_out", "out_in"])
def test_normuon_matches_numpy(layout):
    grads = GRADS["wide"]
    b, b2, eps = 0.95, 0.95, 1e-10
    fan_in, fan_out = (6, 10) if layout == "in_out" else (10, 6)
    axis = 0 if layout == "in_out" else 1  # average over the fan-in axis: one entry per neuron
    m, s, want = 0.0, 0.0, []
    for g in grads:
        m = b * m + (1 - b) * g
        o = np_polar((1 - b) * g + b * m)
        s = b2 * s + (1 - b2) * np.mean(o**2, axis=axis, keepdims=True)
        on = o / np.sqrt(np.maximum(s, eps))
        on = on * np.linalg.norm(o) / np.linalg.norm(on)
        want.append(math.sqrt(max(1, fan_out / fan_in)) * on)
    with jax.enable_x64(True):
        got = run_rule(scale_by_normuon(orthogonalizer="svd", layout=layout), grads)
    assert_steps(got, want)


# ------------------------------------------------------------------------------------ AdaGO
@pytest.mark.parametrize("defaults", [False, True], ids=["explicit", "defaults"])
def test_adago_matches_numpy_with_active_clipping(defaults):
    """Algorithm of Zhang, Liu, Schaeffer (2025): v^2 += min(||G||^2, gamma^2), step
    max(eps, min(||G||, gamma) / v) orth(M); with the documented defaults too (mu 0.95,
    gamma 1, v0 1e-6, eps 1e-3), typed here from the docstring."""
    grads = [g * f for g, f in zip(GRADS["wide"], (0.05, 3.0, 0.2), strict=True)]
    mu, gamma, v0, eps = (0.95, 1.0, 1e-6, 1e-3) if defaults else (0.9, 1.0, 1e-3, 0.05)
    m, v_sq, want = 0.0, v0**2, []
    for g in grads:
        m = mu * m + (1 - mu) * g
        gn = np.linalg.norm(g)
        v_sq += min(gn**2, gamma**2)
        alpha = max(eps, min(gn, gamma) / np.sqrt(v_sq))
        want.append(alpha * np_polar(m))
    assert np.linalg.norm(grads[1]) > gamma  # the clip is exercised
    kwargs = {} if defaults else dict(beta=mu, gamma=gamma, v0=v0, min_step=eps)
    with jax.enable_x64(True):
        got = run_rule(scale_by_adago(orthogonalizer="svd", **kwargs), grads)
    assert_steps(got, want)


# ------------------------------------------------------------------------------------- AuON
# variant -> (scale_by_auon kwargs, NumPy orthogonalizer of the hybrid or None)
AUON_VARIANTS = {
    "plain": (dict(ns_steps=0), None),
    "hybrid_ns1": (dict(ns_steps=1, compute_dtype=jnp.float64), lambda u: np_ns(u, MUON_ABC[:1])),
    "hybrid_svd": (dict(ns_steps=1, orthogonalizer="svd"), np_polar),
    "hybrid_callable": (
        dict(ns_steps=1, orthogonalizer=lambda x: polar_express(x, steps=3, dtype=jnp.float64)),
        lambda u: np_ns(u, PE_ABC[:3], 1.01),
    ),
}


@pytest.mark.parametrize("variant", sorted(AUON_VARIANTS))
def test_auon_matches_numpy(variant):
    kwargs, np_orth = AUON_VARIANTS[variant]
    grads, (fan_in, fan_out), gamma, b = GRADS["wide"], SHAPES["wide"], 1.5, 0.95
    m, want = 0.0, []
    for g in grads:
        m = b * m + (1 - b) * g
        u = (1 - b) * g + b * m
        x = np_orth(u) if np_orth else u
        x = x / (np.linalg.norm(x) + 1e-7)
        r = np.sqrt(np.mean(np.cosh(gamma * x) ** 2))
        want.append(math.sqrt(max(1, fan_out / fan_in)) * x / (r + 1e-8))
        # The factor is pinned between 1 and sqrt(1 + sinh(gamma)^2 / N) (issue 4's remark).
        assert 1 <= r <= math.sqrt(1 + math.sinh(gamma) ** 2 / x.size) + 1e-12
    with jax.enable_x64(True):
        got = run_rule(scale_by_auon(**kwargs), grads)
    assert_steps(got, want, rtol=1e-8, atol=1e-10)


def test_auon_hybrid_alias_takes_an_orthogonalizer():
    """The registered hybrid forwards ``orthogonalizer=``; plain AuON refuses one (it has none)."""
    g = GRADS["wide"][0]
    with jax.enable_x64(True):
        tx = OPTIMIZERS.build("auon_hybrid", {"learning_rate": 0.1, "orthogonalizer": "svd"})
        params = {"w": jnp.zeros(g.shape)}
        u, _ = tx.update({"w": jnp.asarray(g)}, tx.init(params), params)
    # Step 1: u = (1 - b^2) g, so X is polar(g) / sqrt(6) (6 unit singular values).
    x = np_polar(g) / math.sqrt(6)
    r = np.sqrt(np.mean(np.cosh(1.5 * x) ** 2))
    np.testing.assert_allclose(u["w"], -0.1 * math.sqrt(10 / 6) * x / (r + 1e-8), rtol=1e-6)
    with pytest.raises(ValueError, match="ns_steps > 0"):
        scale_by_auon(orthogonalizer="svd")


# ------------------------------------------------------------------------------------ Conda
@pytest.mark.parametrize("kind", ["wide", "tall"])
def test_conda_matches_numpy_with_refresh(kind):
    grads, gap = GRADS[kind], 2
    b1, b2, eps, scale = 0.9, 0.999, 1e-8, 0.25
    left = grads[0].shape[0] <= grads[0].shape[1]
    m, v, want, basis = 0.0, 0.0, [], None
    for t, g in enumerate(grads, 1):
        m = b1 * m + (1 - b1) * g
        if (t - 1) % gap == 0:
            u, _, vt = np.linalg.svd(m, full_matrices=False)
            basis = u if left else vt.T
        rot = (lambda x: basis.T @ x) if left else (lambda x: x @ basis)
        back = (lambda y: basis @ y) if left else (lambda y: y @ basis.T)
        v = b2 * v + (1 - b2) * rot(g) ** 2
        step = (rot(m) / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
        want.append(scale * back(step))
    with jax.enable_x64(True):
        got = run_rule(scale_by_conda(update_proj_gap=gap), grads)
    assert_steps(got, want, rtol=1e-7, atol=1e-9)
    with jax.enable_x64(True):
        p = {"w": jnp.ones(grads[0].shape), "b": jnp.zeros(3)}
        tx = conda(1e-2, update_proj_gap=gap)
        state = tx.init(p)
        for g in grads:
            _, state = jax.jit(tx.update)({"w": jnp.asarray(g), "b": jnp.ones(3)}, state, p)


# ------------------------------------------------------------------------------------ Scion
@pytest.mark.parametrize("norm", ["spectral", "sign", "column", "row"])
def test_scion_matches_numpy(norm):
    grads, (rows, cols) = GRADS["tall"], SHAPES["tall"]
    b, radius = 0.9, 2.0

    def direction(d):
        if norm == "spectral":
            return math.sqrt(cols / rows) * np_polar(d)
        if norm == "sign":
            return np.sign(d)
        if norm == "column":
            return d * math.sqrt(rows) / np.linalg.norm(d, axis=0, keepdims=True)
        return d * math.sqrt(cols) / np.linalg.norm(d, axis=1, keepdims=True)

    d, want = 0.0, []
    for g in grads:
        d = b * d + (1 - b) * g
        want.append(radius * direction(d))
    with jax.enable_x64(True):
        got = run_rule(scale_by_scion(norm=norm, radius=radius, orthogonalizer="svd"), grads)
    assert_steps(got, want)


def test_scion_row_norm_is_the_reference_colnorm_of_an_embedding_table():
    """The reference ``ColNorm(transpose=True)`` for a ``(vocab, d)`` table, ported to NumPy:
    every token's embedding gets unit RMS. Here that is ``norm="row"`` (module docstring)."""
    g = RNG.normal(size=(12, 4))
    t = g.T
    want = (t / (np.sqrt(np.sum(t**2, axis=0, keepdims=True)) / np.sqrt(t.shape[0]))).T
    with jax.enable_x64(True):
        (got,) = run_rule(scale_by_scion(norm="row"), [g])  # step 1: d = (1 - b) g, same lines
    np.testing.assert_allclose(got, want, rtol=1e-10)
    np.testing.assert_allclose(np.sqrt(np.mean(got**2, axis=1)), 1.0, rtol=1e-10)


def test_scion_constrained_is_frank_wolfe_and_stays_in_ball():
    grads, lr, radius = GRADS["wide"], 0.3, 1.5
    p0 = np.zeros(SHAPES["wide"])
    d, p = 0.0, p0
    with jax.enable_x64(True):
        tx = scion(lr, radius=radius, constrained=True, orthogonalizer="svd")
        params = {"w": jnp.asarray(p0)}
        state = tx.init(params)
        for g in grads:
            d = 0.9 * d + 0.1 * g
            p = (1 - lr) * p - lr * radius * math.sqrt(10 / 6) * np_polar(d)
            u, state = tx.update({"w": jnp.asarray(g)}, state, params)
            params = optax.apply_updates(params, u)
            np.testing.assert_allclose(params["w"], p, rtol=1e-10, atol=1e-12)
    # Spectral-norm ball of radius * sqrt(fan_out / fan_in) (the LMO's scale) holds.
    assert np.linalg.norm(p, 2) <= radius * math.sqrt(10 / 6) + 1e-9


# ------------------------------------------------------------------------- Lipschitz bounds
def np_project(w, name, bound, rate):
    u, s, vt = np.linalg.svd(w, full_matrices=False)
    if name == "spectral_normalize":
        return w / max(1.0, s[0] / bound)
    if name == "spectral_cap":
        return (u * np.minimum(s, bound)) @ vt
    if name == "spectral_hammer":
        return w - max(s[0] - bound, 0.0) * np.outer(u[:, 0], vt[0])
    return w - rate * s[0] * np.outer(u[:, 0], vt[0])


@pytest.mark.parametrize(
    "name,make",
    [
        ("spectral_normalize", lambda: spectral_normalize(bound=1.0, power_iters=200)),
        ("spectral_cap", lambda: spectral_cap(bound=1.0)),
        ("spectral_hammer", lambda: spectral_hammer(bound=1.0, power_iters=200)),
        ("spectral_weight_decay", lambda: spectral_weight_decay(rate=0.1, power_iters=200)),
    ],
)
def test_lipschitz_constraints_match_numpy(name, make):
    r = np.random.default_rng(3)
    w = r.normal(size=(8, 5))
    steps = [0.3 * r.normal(size=(8, 5)) for _ in range(3)]
    with jax.enable_x64(True):
        tx = optax.chain(optax.sgd(1.0), make())
        params = {"w": jnp.asarray(w), "b": jnp.ones(5)}
        state = tx.init(params)
        for s in steps:
            u, state = tx.update({"w": jnp.asarray(-s), "b": jnp.zeros(5)}, state, params)
            params = optax.apply_updates(params, u)
            w = np_project(w + s, name, 1.0, 0.1)
            np.testing.assert_allclose(params["w"], w, rtol=1e-8, atol=1e-10)
            np.testing.assert_allclose(params["b"], 1.0, atol=0)  # non-matrix leaves untouched
    top = np.linalg.norm(w, 2)
    # The hammer caps only the top direction, so only these two guarantee the bound.
    if name in ("spectral_normalize", "spectral_cap"):
        assert top <= 1.0 + 1e-8


def test_power_iteration_constraint_converges_across_steps():
    """The documented approximation: one power iteration per step gives a lower estimate of
    sigma_1, so the first projection leaves sigma_1 above the bound; the vector kept in the state
    keeps iterating, and on a fixed matrix the bound holds to round-off after a few steps."""
    w = with_singular_values((8, 5), [3.0, 2.4, 1.0, 0.5, 0.1], seed=4)
    with jax.enable_x64(True):
        tx = optax.chain(optax.sgd(1.0), spectral_normalize(bound=1.0, power_iters=1))
        params = {"w": jnp.asarray(w)}
        state = tx.init(params)
        update = jax.jit(tx.update)
        tops = []
        for _ in range(40):
            u, state = update({"w": jnp.zeros_like(params["w"])}, state, params)
            params = optax.apply_updates(params, u)
            tops.append(np.linalg.norm(np.asarray(params["w"]), 2))
    assert tops[0] > 1.0 + 1e-3, tops[0]  # the estimate from one iteration is too low
    assert np.all(np.diff(tops) <= 1e-12)  # every step moves towards the bound
    np.testing.assert_allclose(tops[-1], 1.0, rtol=1e-9)


def test_default_labels_and_label_override():
    p_np = {"embed": RNG.normal(size=(10, 4)), "w": RNG.normal(size=(4, 6)), "b": np.zeros(6)}
    g_np = {k: RNG.normal(size=v.shape) for k, v in p_np.items()}
    assert default_labels(p_np) == {"embed": "matrix", "w": "matrix", "b": "fallback"}
    stacked = {"layers": np.zeros((3, 4, 6)), "scales": np.zeros((3, 6))}
    assert default_labels(stacked, batch_ndim=1) == {"layers": "matrix", "scales": "fallback"}

    def labels(params):
        return {
            k: "fallback" if k == "embed" or v.ndim < 2 else "matrix" for k, v in params.items()
        }

    with jax.enable_x64(True):
        p, g = jax.tree.map(jnp.asarray, p_np), jax.tree.map(jnp.asarray, g_np)
        tx = muon(0.1, labels=labels, orthogonalizer="svd")
        u, _ = tx.update(g, tx.init(p), p)
    # First AdamW step is -lr g / (|g| + eps): the embedding went to the fallback.
    np.testing.assert_allclose(u["embed"], -0.1 * g_np["embed"] / (np.abs(g_np["embed"]) + 1e-8))
    np.testing.assert_allclose(u["w"], -0.1 * math.sqrt(6 / 4) * np_polar(g_np["w"]), rtol=1e-10)
