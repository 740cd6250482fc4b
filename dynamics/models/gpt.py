"""A GPT-style decoder language model: next-token logits at every position (Radford et al. 2019).

``h_0 = E[tokens] + P[positions]`` (learned positions, ``context`` of them), ``num_layers`` pre-LN
blocks ``h = h + Attn(LN1(h)); h = h + MLP(LN2(h))`` with causal attention (the blocks of
:mod:`dynamics.models.transformer`), a final LayerNorm, and the output projection tied to the
input embedding (Press & Wolf 2017):

    logits[b, t, v] = LN(h_L)[b, t] . E[v]

so ``apply(params, tokens [batch, T]) -> [batch, T, vocab_size]`` and position ``t`` sees tokens
``<= t`` only: the logits at ``t`` predict token ``t + 1``. The vocabulary is the dataset's
(``spec.vocab_size``); ``context`` (default: the sequence length) must be at least ``T``.

Unlike the classifiers of :mod:`dynamics.models`, the output has a position axis; a loss over
every position takes targets ``[batch, T]``.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from dynamics.data import DataSpec
  >>> spec = DataSpec((16,), "int32", 50, vocab_size=50)
  >>> model = gpt(spec, num_layers=2, d_model=32, num_heads=4)
  >>> params = model.init(jax.random.key(0), jnp.zeros((1, 16), jnp.int32))
  >>> model.apply(params, jnp.zeros((3, 16), jnp.int32)).shape
  (3, 16, 50)
  >>> "unembed" in params  # the output projection is params["embed"]["embedding"]
  False
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from dynamics.models import MODELS, Model, from_linen, get_activation
from dynamics.models.transformer import Block, check_heads
from dynamics.registry import ConfigError


class GPT(nn.Module):
    vocab_size: int
    context: int
    num_layers: int
    d_model: int
    num_heads: int
    d_mlp: int
    act: Callable[[jax.Array], jax.Array]

    @nn.compact
    def __call__(self, tokens):
        tokens = tokens.astype(jnp.int32)
        embed = nn.Embed(
            self.vocab_size, self.d_model, embedding_init=nn.initializers.normal(0.02), name="embed"
        )
        pos = nn.Embed(
            self.context,
            self.d_model,
            embedding_init=nn.initializers.normal(0.02),
            name="pos_embed",
        )
        h = embed(tokens) + pos(jnp.arange(tokens.shape[1]))[None]
        for i in range(self.num_layers):
            h = Block(
                self.d_mlp, self.num_heads, "pre", self.act, True, "default", name=f"block_{i}"
            )(h)
        return embed.attend(nn.LayerNorm(epsilon=1e-5, name="ln_final")(h))


@MODELS.register("gpt")
def gpt(
    spec,
    num_layers: int = 4,
    d_model: int = 128,
    num_heads: int = 4,
    d_mlp: int | None = None,
    context: int | None = None,
    activation: str = "gelu",
) -> Model:
    """A decoder LM over ``spec.input_shape = (T,)`` tokens; ``d_mlp`` defaults to ``4 d_model``."""
    if spec.vocab_size is None or len(spec.input_shape) != 1:
        raise ConfigError(
            "model 'gpt' needs token inputs (data.encoding='tokens'); got inputs of "
            f"shape {tuple(spec.input_shape)} without a vocabulary"
        )
    seq_len = spec.input_shape[0]
    context = seq_len if context is None else context
    if context < seq_len:
        raise ConfigError(f"model.context = {context} is shorter than the {seq_len} tokens")
    check_heads(d_model, num_heads)
    module = GPT(
        spec.vocab_size,
        context,
        num_layers,
        d_model,
        num_heads,
        4 * d_model if d_mlp is None else d_mlp,
        get_activation(activation),
    )
    return from_linen(module)
