"""VGG-11 for CIFAR-shaped images (Simonyan & Zisserman 2015, configuration "A").

Eight 3x3 convolutions (SAME padding, ReLU) with 2x2 max pooling after the marked ones,

    64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M

which brings a 32x32 image to a 1x1x512 feature map, then one linear layer ``512 -> num_outputs``:
the CIFAR adaptation of the ImageNet network (whose three-layer 4096-wide head is replaced by one
linear layer), as in the networks Cohen et al. (2021) train with and without BatchNorm.

Parameters with ``batch_norm=False`` (convolutions with biases) and 10 classes:
``sum_l (9 c_{l-1} c_l + c_l) + 512 * 10 + 10 = 9,220,480 + 5,130 = 9,225,610`` (about 9.2M).
With ``batch_norm=True`` the convolutions drop their biases (the BatchNorm shift replaces them)
and each gains a scale and a shift: ``9,225,610 - 2,752 + 2 * 2,752 = 9,228,362``.

``batch_norm=True`` is available on the linen module (``VGG(..., batch_norm=True)``, called with
``train=True`` to use and update the batch statistics, ``mutable=["batch_stats"]``) but not from a
config yet (see :func:`dynamics.models.refuse_batch_norm`).

Example:
  >>> import jax, jax.numpy as jnp
  >>> from dynamics.data import DataSpec
  >>> model = vgg11(DataSpec((32, 32, 3), "float32", 10))
  >>> params = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  >>> sum(p.size for p in jax.tree.leaves(params))
  9225610
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn

from dynamics.models import MODELS, Model, from_linen, refuse_batch_norm
from dynamics.models.images import conv_norm, to_nhwc
from dynamics.models.images import image_shape as _image_shape

# Channels, with "M" for a 2x2 max pooling (Simonyan & Zisserman 2015, Table 1, column A).
VGG11 = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG(nn.Module):
    layers: Sequence[int | str]
    num_outputs: int
    image_shape: tuple[int, int, int]
    channels_first: bool = False
    batch_norm: bool = False

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = to_nhwc(x, self.image_shape, self.channels_first)
        for layer in self.layers:
            if layer == "M":
                h = nn.max_pool(h, (2, 2), strides=(2, 2))
                continue
            h = nn.relu(conv_norm(h, layer, train, self.batch_norm))
        h = h.reshape((h.shape[0], -1))
        return nn.Dense(self.num_outputs)(h)


@MODELS.register("vgg11")
def vgg11(
    spec,
    batch_norm: bool = False,
    image_shape: Sequence[int] | None = None,
    channels_first: bool = False,
) -> Model:
    """VGG-11 over 32x32 images of ``spec.input_shape`` or ``image_shape`` (module doc)."""
    shape = _image_shape(spec, image_shape, "vgg11")
    refuse_batch_norm(batch_norm, "vgg11")
    return from_linen(VGG(VGG11, spec.num_outputs, shape, channels_first))
