"""ViT-tiny: a vision transformer over image patches (Dosovitskiy et al. 2021; DeiT-Ti of Touvron
et al. 2021 fixes the "tiny" size: width 192, 12 layers, 3 heads, MLP 768).

``patch_size x patch_size`` patches are embedded by one linear map (a strided convolution), a
learned class token is prepended (``pool="cls"``, read out at the end) or not (``pool="mean"``:
the mean over patch tokens, Beyer et al. 2022), learned position embeddings are added, then
``num_layers`` pre-LN blocks ``h = h + Attn(LN1(h)); h = h + MLP(LN2(h))`` with bidirectional
attention and a GELU MLP (the blocks of :mod:`dynamics.models.transformer` with ``causal=False``),
a final LayerNorm and a linear head to ``spec.num_outputs``.

On CIFAR-shaped 32x32 inputs the default ``patch_size=4`` gives 64 patches. The defaults have
``12 * (4 * 192^2 + 4 * 192 + 2 * 192 * 768 + 768 + 192 + 4 * 192) + 48 * 192 + 192
+ 65 * 192 + 192 + 2 * 192 + 192 * 10 + 10 = 5,362,762`` parameters with a class token (about
5.4M, DeiT-Ti's 5.7M has 197 positions and a 16x16x3 patch embedding).

Example:
  >>> import jax, jax.numpy as jnp
  >>> from dynamics.data import DataSpec
  >>> model = vit(DataSpec((32, 32, 3), "float32", 10), num_layers=1, d_model=32, num_heads=2)
  >>> params = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  >>> model.apply(params, jnp.zeros((5, 32, 32, 3))).shape
  (5, 10)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from dynamics.models import MODELS, Model, from_linen, get_activation
from dynamics.models.images import image_shape as _image_shape
from dynamics.models.images import to_nhwc
from dynamics.models.transformer import Block, check_heads
from dynamics.registry import ConfigError

POOLS = ("cls", "mean")


class ViT(nn.Module):
    num_outputs: int
    image_shape: tuple[int, int, int]
    channels_first: bool
    patch_size: int
    num_layers: int
    d_model: int
    num_heads: int
    d_mlp: int
    pool: str
    act: Callable[[jax.Array], jax.Array]

    @nn.compact
    def __call__(self, x):
        p = self.patch_size
        h = to_nhwc(x, self.image_shape, self.channels_first)
        h = nn.Conv(self.d_model, (p, p), strides=(p, p), padding="VALID", name="patch_embed")(h)
        h = h.reshape((h.shape[0], -1, self.d_model))
        if self.pool == "cls":
            cls = self.param("cls_token", nn.initializers.zeros, (1, 1, self.d_model))
            h = jnp.concatenate([jnp.broadcast_to(cls, (h.shape[0], 1, self.d_model)), h], 1)
        pos = self.param("pos_embed", nn.initializers.normal(0.02), (1, h.shape[1], self.d_model))
        h = h + pos
        for i in range(self.num_layers):
            h = Block(
                self.d_mlp,
                self.num_heads,
                "pre",
                self.act,
                True,
                "default",
                False,
                name=f"block_{i}",
            )(h)
        h = nn.LayerNorm(epsilon=1e-6, name="ln_final")(h)
        h = h[:, 0] if self.pool == "cls" else jnp.mean(h, axis=1)
        return nn.Dense(self.num_outputs, name="head")(h)


@MODELS.register("vit")
def vit(
    spec,
    patch_size: int = 4,
    num_layers: int = 12,
    d_model: int = 192,
    num_heads: int = 3,
    d_mlp: int = 768,
    pool: str = "cls",
    activation: str = "gelu",
    image_shape: Sequence[int] | None = None,
    channels_first: bool = False,
) -> Model:
    """A ViT over images of ``spec.input_shape`` or ``image_shape`` (module doc)."""
    shape = _image_shape(spec, image_shape, "vit")
    if pool not in POOLS:
        raise ConfigError(f"unknown model.pool {pool!r}; valid choices: {', '.join(POOLS)}")
    if shape[0] % patch_size or shape[1] % patch_size:
        raise ConfigError(
            f"model.patch_size = {patch_size} must divide the image size {shape[0]}x{shape[1]}"
        )
    check_heads(d_model, num_heads)
    module = ViT(
        spec.num_outputs,
        shape,
        channels_first,
        patch_size,
        num_layers,
        d_model,
        num_heads,
        d_mlp,
        pool,
        get_activation(activation),
    )
    return from_linen(module)
