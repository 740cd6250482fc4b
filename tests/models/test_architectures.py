"""VGG-11, ResNet-20/-32, ViT-tiny and the GPT decoder: published parameter counts, BatchNorm
train/eval behaviour, causality and tied embeddings of the LM."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynamics.data import DataSpec
from dynamics.models import build_model
from dynamics.models.resnet import ResNet
from dynamics.models.vgg import VGG, VGG11
from dynamics.registry import ConfigError

CIFAR = DataSpec((32, 32, 3), "float32", 10)
IMAGES = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)


def _count(tree) -> int:
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(tree))


@pytest.mark.parametrize(
    "module,expected,published",
    [
        # He et al. 2016, Table 6: 0.27M and 0.46M; counted by hand in the module docs.
        (ResNet(3, 10, (32, 32, 3), batch_norm=True), 269_722, 0.27e6),
        (ResNet(5, 10, (32, 32, 3), batch_norm=True), 464_154, 0.46e6),
        # VGG-11 convolutions (Simonyan & Zisserman 2015, column A) and a 512 -> 10 head.
        (VGG(VGG11, 10, (32, 32, 3), batch_norm=True), 9_228_362, 9.2e6),
    ],
    ids=["resnet20_bn", "resnet32_bn", "vgg11_bn"],
)
def test_parameter_counts_match_the_papers(module, expected, published):
    variables = jax.eval_shape(module.init, jax.random.key(0), IMAGES)
    n = _count(variables["params"])
    assert n == expected
    assert abs(n - published) / published < 0.01


def test_parameter_counts_without_batch_norm():
    counts = {
        cfg: _count(jax.eval_shape(build_model(dict(cfg), CIFAR).init, jax.random.key(0), IMAGES))
        for cfg in (
            (("name", "resnet"), ("depth", 20)),
            (("name", "resnet"), ("depth", 32)),
            (("name", "vgg11"),),
            (("name", "vit"),),
        )
    }
    # Biases replace BatchNorm: ResNet-20 268,346 weights + 688 conv biases.
    assert list(counts.values()) == [269_034, 463_018, 9_225_610, 5_362_762]


@pytest.mark.parametrize(
    "module",
    [
        ResNet(3, 10, (8, 8, 3), batch_norm=True),
        VGG((4, "M", 8, "M"), 10, (8, 8, 3), batch_norm=True),
    ],
    ids=["resnet", "vgg"],
)
def test_batch_norm_train_mode_differs_from_eval_mode(module):
    x = jax.random.normal(jax.random.key(1), (16, 8, 8, 3)) * 3.0 + 2.0
    variables = module.init(jax.random.key(0), x)
    train_out, updates = module.apply(variables, x, train=True, mutable=["batch_stats"])
    eval_out = module.apply(variables, x, train=False)
    assert not np.allclose(train_out, eval_out, atol=1e-3)
    # The step moves the running means towards the batch means (momentum 0.9).
    old = jax.tree.leaves(variables["batch_stats"])
    new = jax.tree.leaves(updates["batch_stats"])
    assert any(not np.allclose(a, b) for a, b in zip(old, new, strict=True))
    # Eval mode ignores the rest of the batch; train mode normalizes with batch statistics.
    np.testing.assert_allclose(
        module.apply(variables, x[:4], train=False), eval_out[:4], rtol=1e-4, atol=1e-5
    )
    first_four, _ = module.apply(variables, x[:4], train=True, mutable=["batch_stats"])
    assert not np.allclose(first_four, train_out[:4], atol=1e-4)


@pytest.mark.parametrize("name", ["vgg11", "resnet"])
def test_batch_norm_from_a_config_says_it_is_not_trainable_yet(name):
    with pytest.raises(
        ConfigError, match=r"^model\.batch_norm=True: .* set model\.batch_norm=False$"
    ):
        build_model({"name": name, "batch_norm": True}, CIFAR)


def test_resnet_depth_must_be_6n_plus_2():
    with pytest.raises(ConfigError, match="6n \\+ 2"):
        build_model({"name": "resnet", "depth": 18}, CIFAR)


def test_vit_cls_and_mean_pooling_outputs():
    spec = DataSpec((8, 8, 3), "float32", 5)
    x = jax.random.normal(jax.random.key(2), (3, 8, 8, 3))
    for pool, num_tokens in (("cls", 5), ("mean", 4)):
        cfg = {"name": "vit", "patch_size": 4, "num_layers": 1, "d_model": 8, "num_heads": 2}
        model = build_model({**cfg, "d_mlp": 16, "pool": pool}, spec)
        params = model.init(jax.random.key(0), x)
        assert params["pos_embed"].shape == (1, num_tokens, 8)
        assert ("cls_token" in params) == (pool == "cls")
        out = model.apply(params, x)
        assert out.shape == (3, 5)
        # Bidirectional attention: the first patch's features depend on the last patch.
        x2 = x.at[:, 4:, 4:, :].add(1.0)
        assert not np.allclose(model.apply(params, x2), out)
    with pytest.raises(ConfigError, match="patch_size"):
        build_model({"name": "vit", "patch_size": 3}, spec)


LM = DataSpec((8,), "int32", 11, vocab_size=11)
GPT_CFG = {"name": "gpt", "num_layers": 2, "d_model": 16, "num_heads": 2}


def _gpt():
    model = build_model(GPT_CFG, LM)
    tokens = jax.random.randint(jax.random.key(3), (4, 8), 0, 11)
    return model, model.init(jax.random.key(0), tokens), tokens


def test_gpt_logits_at_every_position_and_causal():
    model, params, tokens = _gpt()
    logits = model.apply(params, tokens)
    assert logits.shape == (4, 8, 11) and logits.dtype == jnp.float32
    for t in range(7):
        changed = tokens.at[:, t + 1].set((tokens[:, t + 1] + 1) % 11)
        new = model.apply(params, changed)
        np.testing.assert_array_equal(new[:, : t + 1], logits[:, : t + 1])
        assert not np.allclose(new[:, t + 1], logits[:, t + 1])


def test_gpt_output_projection_is_the_embedding():
    model, params, _ = _gpt()
    tokens = jnp.zeros((2, 8), jnp.int32)  # row 5 of E enters only through the output
    assert set(params) == {"embed", "pos_embed", "block_0", "block_1", "ln_final"}
    logits = model.apply(params, tokens)
    scaled = jax.tree.map(lambda a: a, params)
    scaled["embed"] = {"embedding": params["embed"]["embedding"].at[5].multiply(2.0)}
    new = model.apply(scaled, tokens)
    np.testing.assert_allclose(new[..., 5], 2 * logits[..., 5], rtol=1e-5)
    np.testing.assert_array_equal(np.delete(new, 5, -1), np.delete(logits, 5, -1))


def test_gpt_config_errors():
    with pytest.raises(ConfigError, match="tokens"):
        build_model({"name": "gpt"}, CIFAR)
    with pytest.raises(ConfigError, match="model.context = 4 is shorter than the 8 tokens"):
        build_model({**GPT_CFG, "context": 4}, LM)
