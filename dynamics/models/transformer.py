"""Decoder-only transformer over token sequences; the prediction is read at the last position.

``h_0 = embed(tokens) + pos_embed(positions)`` (learned positions), then ``num_layers`` blocks of
causal multi-head self-attention and an MLP, then (unless ``layer_norm="none"``) a final LayerNorm
and a bias-free linear unembedding of the last position to ``spec.num_outputs`` logits.

Block variants (``layer_norm``):

* ``"pre"``: the standard pre-LN block ``h = h + Attn(LN1(h)); h = h + MLP(LN2(h))``.
* ``"none"``: no LayerNorm anywhere, ``h = h + Attn(h); h = h + MLP(h)`` (Nanda et al. 2023: one
  layer, d 128, 4 heads, d_mlp 512, ReLU).
* ``"grokfast"``: the reference block of Lee et al. 2024, ``h = LN1(h); h = h + Attn(h);
  h = h + MLP(LN2(h))``: the residual stream itself is re-normalized before attention (2 layers,
  d 128, 4 heads, GELU MLP with d_mlp = 4 d = 512).

Attention: ``softmax(q k^T / sqrt(d_head) + causal mask) v`` per head, with separate ``query``,
``key``, ``value`` and ``out`` Dense layers (kernels ``(d_model, d_model)``, Flax ``(in, out)``).
The causal mask means position ``t`` only reads positions ``<= t``; ``causal=False`` on
:class:`Block` drops it, for the encoder of :mod:`dynamics.models.vit`.

Initialization (``init``):

* ``"default"``: Flax's defaults (Dense LeCun normal, zero biases, Embed normal with std
  ``1/sqrt(d_model)``).
* ``"torch"``: PyTorch's defaults as in the Grokfast reference (``nn.Embedding``,
  ``nn.MultiheadAttention``, ``nn.Linear``): embeddings ``N(0, 1)``; query/key/value kernels
  Xavier-uniform over torch's *fused* ``(3d, d)`` in-projection, i.e. ``U(+-sqrt(6 / (4 d)))``;
  attention biases 0; the attention output projection and the MLP Linear layers
  ``U(+-1/sqrt(fan_in))`` for the kernel, MLP biases ``U(+-1/sqrt(fan_in))`` as ``nn.Linear``
  (the attention output bias is zeroed by ``nn.MultiheadAttention``); LayerNorm scale 1, bias 0,
  epsilon 1e-5; unembedding ``U(+-1/sqrt(d))`` without bias.

``predict_vocab=True`` makes the unembedding predict over the whole vocabulary (``vocab_size``
logits, as the Grokfast reference's head does) instead of ``spec.num_outputs`` classes; integer
labels still index the first classes.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from dynamics.data import DataSpec
  >>> spec = DataSpec((4,), "int32", 97, vocab_size=99)  # x * y mod 97 tokens
  >>> model = transformer(spec, layer_norm="grokfast", init="torch", activation="gelu")
  >>> params = model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
  >>> model.apply(params, jnp.zeros((8, 4), jnp.int32)).shape
  (8, 97)
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from dynamics.models import MODELS, Model, from_linen, get_activation
from dynamics.models.mlp import check_init, symmetric_uniform, torch_uniform
from dynamics.registry import ConfigError

LAYER_NORMS = ("pre", "none", "grokfast")


def _dense(features, fan_in, use_bias, init, name, kernel_init=None, zero_bias=False):
    if init != "torch":
        return nn.Dense(features, use_bias=use_bias, name=name)
    u = torch_uniform(fan_in)
    bias_init = nn.initializers.zeros if zero_bias else u
    return nn.Dense(
        features, use_bias=use_bias, kernel_init=kernel_init or u, bias_init=bias_init, name=name
    )


class CausalSelfAttention(nn.Module):
    num_heads: int
    use_bias: bool
    init_style: str
    causal: bool = True

    @nn.compact
    def __call__(self, h):
        b, t, d = h.shape
        hd = d // self.num_heads
        # torch's nn.MultiheadAttention draws its fused (3d, d) in-projection Xavier-uniform.
        qkv_init = symmetric_uniform((6.0 / (4 * d)) ** 0.5) if self.init_style == "torch" else None
        q, k, v = (
            _dense(d, d, self.use_bias, self.init_style, n, qkv_init, zero_bias=True)(h).reshape(
                b, t, self.num_heads, hd
            )
            for n in ("query", "key", "value")
        )
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(hd).astype(h.dtype)
        if self.causal:
            mask = jnp.tril(jnp.ones((t, t), bool))
            logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
        o = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, axis=-1), v).reshape(b, t, d)
        return _dense(d, d, self.use_bias, self.init_style, "out", zero_bias=True)(o)


class Block(nn.Module):
    d_mlp: int
    num_heads: int
    layer_norm: str
    act: Callable[[jax.Array], jax.Array]
    use_bias: bool
    init_style: str
    causal: bool = True

    @nn.compact
    def __call__(self, h):
        d = h.shape[-1]
        attn = CausalSelfAttention(
            self.num_heads, self.use_bias, self.init_style, self.causal, name="attn"
        )

        def mlp(z):
            z = self.act(_dense(self.d_mlp, d, self.use_bias, self.init_style, "mlp_in")(z))
            return _dense(d, self.d_mlp, self.use_bias, self.init_style, "mlp_out")(z)

        if self.layer_norm == "none":
            h = h + attn(h)
            return h + mlp(h)
        ln1 = nn.LayerNorm(epsilon=1e-5, name="ln1")
        ln2 = nn.LayerNorm(epsilon=1e-5, name="ln2")
        if self.layer_norm == "grokfast":
            h = ln1(h)
            h = h + attn(h)
        else:
            h = h + attn(ln1(h))
        return h + mlp(ln2(h))


class Transformer(nn.Module):
    vocab_size: int
    seq_len: int
    num_outputs: int
    num_layers: int
    d_model: int
    num_heads: int
    d_mlp: int
    layer_norm: str
    act: Callable[[jax.Array], jax.Array]
    use_bias: bool
    init_style: str

    @nn.compact
    def __call__(self, tokens):
        tokens = tokens.astype(jnp.int32)
        embed_init = (
            nn.initializers.normal(1.0)
            if self.init_style == "torch"
            else nn.linear.default_embed_init
        )
        h = nn.Embed(self.vocab_size, self.d_model, embedding_init=embed_init, name="embed")(tokens)
        pos = nn.Embed(self.seq_len, self.d_model, embedding_init=embed_init, name="pos_embed")
        h = h + pos(jnp.arange(tokens.shape[1]))[None]
        for i in range(self.num_layers):
            h = Block(
                self.d_mlp,
                self.num_heads,
                self.layer_norm,
                self.act,
                self.use_bias,
                self.init_style,
                name=f"block_{i}",
            )(h)
        if self.layer_norm != "none":
            h = nn.LayerNorm(epsilon=1e-5, name="ln_final")(h)
        return _dense(self.num_outputs, self.d_model, False, self.init_style, "unembed")(h[:, -1])


def check_heads(d_model: int, num_heads: int) -> None:
    """Raises ConfigError unless the heads split ``d_model`` evenly."""
    if d_model % num_heads:
        raise ConfigError(
            f"model.d_model ({d_model}) must be divisible by model.num_heads ({num_heads})"
        )


@MODELS.register("transformer")
def transformer(
    spec,
    num_layers: int = 2,
    d_model: int = 128,
    num_heads: int = 4,
    d_mlp: int = 512,
    layer_norm: str = "pre",
    activation: str = "relu",
    use_bias: bool = True,
    init: str = "default",
    predict_vocab: bool = False,
) -> Model:
    """A decoder-only transformer over ``spec.input_shape = (seq_len,)`` tokens."""
    if layer_norm not in LAYER_NORMS:
        raise ConfigError(
            f"unknown model.layer_norm {layer_norm!r}; valid choices: {', '.join(LAYER_NORMS)}"
        )
    check_init(init)
    if spec.vocab_size is None or len(spec.input_shape) != 1:
        raise ConfigError(
            "model 'transformer' needs token inputs (data.encoding='tokens'); got inputs of "
            f"shape {tuple(spec.input_shape)} without a vocabulary"
        )
    check_heads(d_model, num_heads)
    num_outputs = spec.vocab_size if predict_vocab else spec.num_outputs
    return from_linen(
        Transformer(
            spec.vocab_size,
            spec.input_shape[0],
            num_outputs,
            num_layers,
            d_model,
            num_heads,
            d_mlp,
            layer_norm,
            get_activation(activation),
            use_bias,
            init,
        )
    )
