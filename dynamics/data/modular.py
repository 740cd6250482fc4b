"""Modular arithmetic ``a op b mod p``: the grokking tasks.

Every pair ``(a, b)`` in ``[0, p)^2`` (``b = 0`` excluded for division and when ``nonzero_b``) is
one example with label ``c = a op b mod p``; division multiplies by the modular inverse
``b^(p-2) mod p`` (``p`` prime). A seeded permutation puts ``round(train_fraction * n)`` pairs in
the training set and the rest in the test set.

Encodings:

* ``"one_hot"``: ``concat(onehot(a), onehot(b))``, ``2p`` float features (Prieto et al. 2025:
  226 inputs for p = 113).
* ``"tokens"``: the sequence ``[a, op_token, b, eq_token]`` with ``op_token = p`` and
  ``eq_token = p + 1`` (vocabulary ``p + 2``), read by a decoder that predicts ``c`` at the last
  position (Power et al. 2022; Nanda et al. 2023; Lee et al. 2024).

References: Power et al. 2022, "Grokking"; Nanda et al. 2023, "Progress measures for grokking via
mechanistic interpretability" (a + b mod 113, 30% train); Lee et al. 2024, "Grokfast" (x * y mod
97 with y in 1..96, 9,312 pairs, 50% train: ``p=97, op="*", nonzero_b=True,
train_fraction=0.5``); Prieto et al. 2025, "Grokking at the edge of numerical stability".

Example:
  >>> ds = modular_arithmetic(0, p=97, op="*", nonzero_b=True, train_fraction=0.5,
  ...                         encoding="tokens")
  >>> ds.train["x"].shape, ds.spec.vocab_size
  ((4656, 4), 99)
"""

from __future__ import annotations

import numpy as np

from dynamics.data import DATASETS, Dataset, DataSpec, split_indices
from dynamics.registry import ConfigError

OPS = ("+", "-", "*", "/")
ENCODINGS = ("one_hot", "tokens")


def _is_prime(p: int) -> bool:
    return p >= 2 and all(p % d for d in range(2, int(p**0.5) + 1))


def modular_pairs(p: int, op: str, nonzero_b: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """All operand pairs ``[n, 2]`` (a-major order) and their labels ``a op b mod p``."""
    a, b = (g.ravel() for g in np.meshgrid(np.arange(p), np.arange(p), indexing="ij"))
    if op == "/" or nonzero_b:
        a, b = a[b != 0], b[b != 0]
    if op == "+":
        c = (a + b) % p
    elif op == "-":
        c = (a - b) % p
    elif op == "*":
        c = (a * b) % p
    else:
        c = (a * np.array([pow(int(v), p - 2, p) for v in b])) % p
    return np.stack([a, b], axis=1).astype(np.int32), c.astype(np.int32)


def encode(pairs: np.ndarray, p: int, encoding: str) -> np.ndarray:
    """One-hot pair features ``[n, 2p]`` or token sequences ``[n, 4]`` (see the module doc)."""
    a, b = pairs[:, 0], pairs[:, 1]
    if encoding == "one_hot":
        eye = np.eye(p, dtype=np.float32)
        return np.concatenate([eye[a], eye[b]], axis=1)
    n = len(pairs)
    return np.stack([a, np.full(n, p), b, np.full(n, p + 1)], axis=1).astype(np.int32)


@DATASETS.register("modular_arithmetic")
def modular_arithmetic(
    seed: int,
    p: int = 113,
    op: str = "+",
    train_fraction: float = 0.3,
    encoding: str = "one_hot",
    nonzero_b: bool = False,
) -> Dataset:
    """All pairs ``a op b mod p`` split at random into train and test (see the module doc)."""
    if op not in OPS:
        raise ConfigError(f"unknown data.op {op!r}; valid choices: {', '.join(OPS)}")
    if encoding not in ENCODINGS:
        raise ConfigError(
            f"unknown data.encoding {encoding!r}; valid choices: {', '.join(ENCODINGS)}"
        )
    if op == "/" and not _is_prime(p):
        raise ConfigError(f"data.p must be prime for division, got {p}")
    if not 0.0 < train_fraction <= 1.0:
        raise ConfigError(f"data.train_fraction must be in (0, 1], got {train_fraction}")
    pairs, labels = modular_pairs(p, op, nonzero_b)
    x = encode(pairs, p, encoding)
    tr, te = split_indices(len(x), int(round(train_fraction * len(x))), seed)
    if encoding == "one_hot":
        spec = DataSpec((2 * p,), "float32", p)
    else:
        spec = DataSpec((4,), "int32", p, vocab_size=p + 2)
    test = {"x": x[te], "y": labels[te]} if len(te) else None
    return Dataset({"x": x[tr], "y": labels[tr]}, test, p, spec)
