"""From a command line to a config: the config file with its preset, and the field overrides.

``python -m experiments.run`` and ``python -m experiments.sweep`` read a config the same way:

* ``--config=FILE[:preset]`` names a Python file whose ``get_config(arg)`` returns the config
  (``get_config()`` without ``:preset``); a missing file, and an unknown preset (the file raises
  ``ConfigError``, see ``configs/_presets.py``), are one-line errors.
* ``--config.FIELD=VALUE`` sets one dotted field, one argument each. The space form
  ``--config.FIELD VALUE`` is refused by both commands with one line (absl accepts it for its own
  flags, but a sweep forwards its overrides to every run as single arguments, and a value that
  happens to start with ``--`` would be read as a flag). ``VALUE`` is kept as text for a field
  that holds a string, else read as a Python literal (:func:`dynamics.train.config.parse_value`),
  and set by :func:`dynamics.train.config.set_field` (which names a misspelled field with the
  closest existing one).

Example:
  >>> _, config = load("configs/classification.py:modular_mlp")
  >>> overrides, rest = split_overrides(["--workdir=w", "--config.num_steps=20"])
  >>> rest, apply_overrides(config, overrides).num_steps
  (['--workdir=w'], 20)
"""

from __future__ import annotations

import importlib.util
import types
from collections.abc import Sequence
from pathlib import Path

import ml_collections

from dynamics.registry import ConfigError
from dynamics.train.config import parse_override, set_field

PREFIX = "--config."


def load_module(path: str) -> types.ModuleType:
    """Imports the config file at ``path``; ConfigError if there is none."""
    if not Path(path).is_file():
        raise ConfigError(f"config file {path} does not exist")
    spec = importlib.util.spec_from_file_location(f"_config_{Path(path).stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file {path} defines no get_config(arg)")
    return module


def load(spec: str) -> tuple[types.ModuleType, ml_collections.ConfigDict]:
    """``(module, module.get_config(arg))`` of ``FILE[:arg]`` (no argument without ``:``)."""
    path, sep, arg = spec.partition(":")
    module = load_module(path)
    return module, module.get_config(*((arg,) if sep else ()))


def split_overrides(argv: Sequence[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """``([(FIELD, VALUE), ...], other arguments)``; ConfigError for ``--config.FIELD`` alone."""
    overrides, rest = [], []
    for arg in argv:
        if not arg.startswith(PREFIX):
            rest.append(arg)
            continue
        key, sep, value = arg[len(PREFIX) :].partition("=")
        if not sep or not key:
            raise ConfigError(
                f"override {arg} has no value: write {PREFIX}FIELD=VALUE as one argument"
            )
        overrides.append((key, value))
    return overrides, rest


def apply_overrides(
    config: ml_collections.ConfigDict,
    overrides: Sequence[tuple[str, str]],
    where: str | None = None,
) -> ml_collections.ConfigDict:
    """Sets each ``(FIELD, VALUE)`` text override in order; returns ``config``."""
    for key, raw in overrides:
        set_field(config, key, parse_override(config, key, raw), where)
    return config
