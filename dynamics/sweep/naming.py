"""Run directory names derived from a run's overrides, and override values as command-line text.

A run's name depends only on its own overrides, so re-running a sweep (or growing it with more
seeds) finds the same directories and skips or resumes them. Keys are shortened to their shortest
dotted suffix that is unique within the run (``optimizer.learning_rate`` -> ``learning_rate``),
values are written with ``repr`` for numbers (exact: ``0.1`` and ``0.1000001`` stay apart), pairs
are joined by ``,``. A run without overrides is ``base``; names longer than 120 characters keep a
prefix and a hash of the full name, and names whose unsafe characters were replaced by ``_`` get
that hash appended, so two runs never share a directory.

Example:
  >>> run_name({"optimizer.learning_rate": 0.05, "seed": 1, "model.widths": (32, 32)})
  'learning_rate=0.05,seed=1,widths=32x32'
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

MAX_NAME = 120
_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+-]")


def short_keys(keys: list[str]) -> dict[str, str]:
    """Maps each dotted key to its shortest dotted suffix that no other key ends with."""
    out = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            suffix = ".".join(parts[-n:])
            others = [k for k in keys if k != key]
            if not any(k == suffix or k.endswith("." + suffix) for k in others):
                break
        out[key] = suffix
    return out


def format_value(value: Any) -> str:
    """An override value as ml_collections' ``--config.a.b=VALUE`` parses it back."""
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple):
        return (
            "(" + ", ".join(format_value(v) for v in value) + ("," if len(value) == 1 else "") + ")"
        )
    return repr(value)


def _name_value(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "x".join(_name_value(v) for v in value)
    return value if isinstance(value, str) else repr(value)


def run_name(overrides: Mapping[str, Any]) -> str:
    """A file-system-safe, deterministic directory name for a run with these overrides."""
    if not overrides:
        return "base"
    short = short_keys(list(overrides))
    full = ",".join(f"{short[k]}={_name_value(v)}" for k, v in overrides.items())
    name = _UNSAFE.sub("_", full)
    digest = hashlib.sha1(full.encode()).hexdigest()[:10]
    if len(name) > MAX_NAME:
        name = f"{name[: MAX_NAME - 11]}-{digest}"
    elif name != full:  # "a/b" and "a_b" must not share a directory
        name = f"{name}-{digest}"
    return name
