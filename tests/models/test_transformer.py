"""Transformer: a NumPy re-derivation of each block variant, the causal mask, torch-style init."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf

from dynamics.data import DataSpec
from dynamics.models import build_model, get_activation
from dynamics.models.transformer import Transformer

SPEC = DataSpec((5,), "int32", 7, vocab_size=9)
D, HEADS, D_MLP = 32, 4, 48


def _ln(h, p):
    mu, var = h.mean(-1, keepdims=True), h.var(-1, keepdims=True)
    return (h - mu) / np.sqrt(var + 1e-5) * p["scale"] + p["bias"]


def _dense(h, p):
    return h @ p["kernel"] + p["bias"]


def _attention(h, p):
    b, t, d = h.shape
    hd = d // HEADS
    q, k, v = (_dense(h, p[n]).reshape(b, t, HEADS, hd) for n in ("query", "key", "value"))
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(hd)
    logits = np.where(np.tril(np.ones((t, t), bool)), logits, -np.inf)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    return _dense(np.einsum("bhqk,bkhd->bqhd", w, v).reshape(b, t, d), p["out"])


def _gelu(z):
    return 0.5 * z * (1 + erf(z / np.sqrt(2)))


def numpy_forward(p, tokens, layer_norm, num_layers):
    h = p["embed"]["embedding"][tokens] + p["pos_embed"]["embedding"][: tokens.shape[1]]
    for i in range(num_layers):
        blk = p[f"block_{i}"]

        def mlp(z, blk=blk):
            return _dense(_gelu(_dense(z, blk["mlp_in"])), blk["mlp_out"])

        if layer_norm == "none":
            h = h + _attention(h, blk["attn"])
            h = h + mlp(h)
        elif layer_norm == "grokfast":  # h = LN1(h); h = h + Attn(h); h = h + MLP(LN2(h))
            h = _ln(h, blk["ln1"])
            h = h + _attention(h, blk["attn"])
            h = h + mlp(_ln(h, blk["ln2"]))
        else:
            h = h + _attention(_ln(h, blk["ln1"]), blk["attn"])
            h = h + mlp(_ln(h, blk["ln2"]))
    if layer_norm != "none":
        h = _ln(h, p["ln_final"])
    return h[:, -1] @ p["unembed"]["kernel"]


CFG = {
    "name": "transformer",
    "num_layers": 2,
    "d_model": D,
    "num_heads": HEADS,
    "d_mlp": D_MLP,
    "activation": "gelu",
    "init": "torch",
    "predict_vocab": True,
}


@pytest.fixture(scope="module")
def params():
    """One float64 initialization shared by every test (the ``pre`` and ``grokfast`` blocks have
    the same parameters; ``none`` drops the LayerNorms)."""
    tokens = jnp.zeros((1, 5), jnp.int32)
    with jax.enable_x64(True):
        p = build_model({**CFG, "layer_norm": "grokfast"}, SPEC).init(jax.random.key(0), tokens)
    return jax.tree.map(np.asarray, p)


def _without_layer_norms(p):
    p = {k: v for k, v in p.items() if k != "ln_final"}
    for i in range(2):
        p[f"block_{i}"] = {k: v for k, v in p[f"block_{i}"].items() if k not in ("ln1", "ln2")}
    return p


@pytest.mark.parametrize("layer_norm", ["pre", "none", "grokfast"])
def test_forward_matches_numpy_rederivation(params, layer_norm):
    p = _without_layer_norms(params) if layer_norm == "none" else params
    model = build_model({**CFG, "layer_norm": layer_norm}, SPEC)
    tokens = np.random.default_rng(0).integers(0, 9, size=(3, 5)).astype(np.int32)
    with jax.enable_x64(True):
        out = model.apply(jax.tree.map(jnp.asarray, p), tokens)
        assert out.dtype == jnp.float64 and out.shape == (3, 9)  # predict_vocab: all 9 tokens
    expected = numpy_forward(p, tokens, layer_norm, 2)
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-10, atol=1e-12)


def test_causal_mask_later_tokens_do_not_change_earlier_positions(params):
    module = Transformer(
        vocab_size=9,
        seq_len=5,
        num_outputs=9,
        num_layers=2,
        d_model=D,
        num_heads=HEADS,
        d_mlp=D_MLP,
        layer_norm="pre",
        act=get_activation("gelu"),
        use_bias=True,
        init_style="torch",
    )
    a = np.array([[1, 2, 3, 4, 5]], np.int32)
    b = a.copy()
    b[0, 3] = 8  # change position 3

    def hidden(tokens):
        with jax.enable_x64(True):
            _, state = module.apply({"params": params}, tokens, capture_intermediates=True)
        return np.asarray(state["intermediates"]["block_1"]["__call__"][0])

    ha, hb = hidden(a), hidden(b)
    np.testing.assert_array_equal(ha[:, :3], hb[:, :3])
    assert np.abs(ha[:, 3:] - hb[:, 3:]).min(axis=-1).max() > 1e-4


def test_torch_init_ranges(params):
    p, blk = params, params["block_0"]
    assert all(a.dtype == np.float64 for a in jax.tree.leaves(p))  # initialized under x64

    def check_uniform(x, bound):
        assert np.abs(x).max() <= bound and np.abs(x).max() > 0.9 * bound
        np.testing.assert_allclose(x.var(), bound**2 / 3, rtol=0.15)

    np.testing.assert_allclose(np.std(p["embed"]["embedding"]), 1.0, rtol=0.1)  # N(0, 1)
    np.testing.assert_allclose(np.std(p["pos_embed"]["embedding"]), 1.0, rtol=0.15)
    for n in ("query", "key", "value"):  # Xavier over torch's fused (3d, d) in-projection
        check_uniform(blk["attn"][n]["kernel"], np.sqrt(6 / (4 * D)))
        assert np.all(blk["attn"][n]["bias"] == 0)
    check_uniform(blk["attn"]["out"]["kernel"], 1 / np.sqrt(D))
    assert np.all(blk["attn"]["out"]["bias"] == 0)
    check_uniform(blk["mlp_in"]["kernel"], 1 / np.sqrt(D))
    check_uniform(blk["mlp_in"]["bias"], 1 / np.sqrt(D))
    check_uniform(blk["mlp_out"]["kernel"], 1 / np.sqrt(D_MLP))
    check_uniform(p["unembed"]["kernel"], 1 / np.sqrt(D))
    assert p["unembed"]["kernel"].shape == (D, 9) and "bias" not in p["unembed"]
    assert np.all(blk["ln1"]["scale"] == 1) and np.all(blk["ln1"]["bias"] == 0)
