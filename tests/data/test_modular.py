"""Modular arithmetic: sizes, both encodings re-derived by hand, the split."""

import numpy as np
import pytest

from dynamics.data import load_dataset
from dynamics.data.modular import modular_arithmetic
from dynamics.registry import ConfigError


def _decode_one_hot(x, p):
    assert np.all(x.sum(axis=1) == 2)
    return x[:, :p].argmax(axis=1), x[:, p:].argmax(axis=1)


@pytest.mark.parametrize("op", ["+", "-", "*", "/"])
def test_one_hot_labels_rederived_by_hand(op):
    p = 11
    ds = modular_arithmetic(3, p=p, op=op, train_fraction=0.5, encoding="one_hot")
    for split in (ds.train, ds.test):
        a, b = _decode_one_hot(split["x"], p)
        for ai, bi, c in zip(a, b, split["y"], strict=True):
            if op == "+":
                assert c == (ai + bi) % p
            elif op == "-":
                assert c == (ai - bi) % p
            elif op == "*":
                assert c == (ai * bi) % p
            else:  # c is a / b: multiplying back by b gives a.
                assert bi != 0 and (c * bi) % p == ai
    n = p * (p - 1) if op == "/" else p * p
    assert len(ds.train["y"]) + len(ds.test["y"]) == n
    assert ds.spec.input_shape == (2 * p,) and ds.spec.num_outputs == p and ds.num_classes == p
    assert ds.train["x"].dtype == np.float32 and ds.train["y"].dtype == np.int32


def test_tokens_and_grokfast_sizes():
    ds = modular_arithmetic(0, p=97, op="*", train_fraction=0.5, encoding="tokens", nonzero_b=True)
    x = np.concatenate([ds.train["x"], ds.test["x"]])
    y = np.concatenate([ds.train["y"], ds.test["y"]])
    assert x.shape == (9312, 4) and len(ds.train["y"]) == 4656
    assert x.dtype == np.int32 and ds.spec.vocab_size == 99 and ds.spec.input_dtype == "int32"
    assert np.all(x[:, 1] == 97) and np.all(x[:, 3] == 98)
    assert x[:, 2].min() == 1 and x[:, 0].min() == 0
    np.testing.assert_array_equal(y, (x[:, 0] * x[:, 2]) % 97)
    # Every pair exactly once across the split.
    assert len({(int(a), int(b)) for a, b in x[:, [0, 2]]}) == 9312


def test_split_is_seeded_disjoint_and_sized():
    a = modular_arithmetic(0, p=13, train_fraction=0.3)
    b = modular_arithmetic(0, p=13, train_fraction=0.3)
    c = modular_arithmetic(1, p=13, train_fraction=0.3)
    np.testing.assert_array_equal(a.train["x"], b.train["x"])
    assert not np.array_equal(a.train["x"], c.train["x"])
    assert len(a.train["y"]) == round(0.3 * 169)
    train = {tuple(r) for r in a.train["x"].astype(int)}
    test = {tuple(r) for r in a.test["x"].astype(int)}
    assert not train & test and len(train | test) == 169


def test_data_seed_overrides_the_run_seed():
    a = load_dataset({"name": "modular_arithmetic", "p": 7, "seed": 5}, seed=0)
    b = load_dataset({"name": "modular_arithmetic", "p": 7}, seed=5)
    np.testing.assert_array_equal(a.train["x"], b.train["x"])


def test_config_errors():
    with pytest.raises(ConfigError, match="data.op"):
        load_dataset({"name": "modular_arithmetic", "op": "^"}, 0)
    with pytest.raises(ConfigError, match="prime"):
        load_dataset({"name": "modular_arithmetic", "op": "/", "p": 12}, 0)
    with pytest.raises(ConfigError, match="unknown field data.prime"):
        load_dataset({"name": "modular_arithmetic", "prime": 7}, 0)
    with pytest.raises(ConfigError, match="valid choices: cifar10, digits"):
        load_dataset({"name": "mnist"}, 0)
