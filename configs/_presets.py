"""The presets of the config files: one parser for ``--config=configs/NAME.py:<preset>``.

A config file's ``get_config(arg)`` is a straight-line body over ``base_config()`` for its default
setup, then the override dict of the preset ``arg`` names (the model is big_vision's
``configs/common.py:parse_arg``, which turns the one string argument of ``get_config`` into
settings with their defaults)::

    PRESETS = {"digits": {}, "momentum": {"optimizer.name": "momentum", ...}}

    def get_config(arg=None):
        preset = _presets.parse_arg(arg, PRESETS, default="digits", file=__file__)
        config = base_config()
        config.num_steps = 3000
        ...
        return _presets.apply(config, PRESETS[preset])

A preset is the same kind of override dict a sweep run is (``{"optimizer.learning_rate": 0.1}``)
and is applied by the same ``dynamics.train.config.set_field``, where a preset may add a field
as the body would (``"data.flatten": False``, ``"analysis.band": 0.15``) and a whole section can
be replaced by a dict (``"model": dict(name="cnn", channels=(16, 16))``). An unknown preset raises
:class:`UnknownPreset`, one line naming the file and the valid presets, which
``experiments.run`` and ``experiments.sweep`` print before exiting with code 2.

Example:
  >>> from dynamics.train.config import base_config
  >>> presets = {"fast": {"num_steps": 10}, "slow": {}}
  >>> config = apply(base_config(), presets[parse_arg("fast", presets, "slow", "configs/c.py")])
  >>> config.num_steps
  10
  >>> try:
  ...     parse_arg("fats", presets, "slow", "configs/c.py")
  ... except UnknownPreset as e:
  ...     print(e)
  unknown preset 'fats' for configs/c.py; valid presets: fast, slow
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import ml_collections

from dynamics.registry import ConfigError
from dynamics.train.config import set_field


class UnknownPreset(ConfigError):
    """``get_config(arg)`` was given a preset its file does not define."""


def _shown(file: str) -> str:
    """``file`` relative to the working directory when it lies below it (as a user types it)."""
    rel = os.path.relpath(file)
    return file if rel.startswith("..") else rel


def parse_arg(arg: str | None, presets: Iterable[str], default: str, file: str) -> str:
    """The preset ``arg`` names (``default`` for None or ``""``); raises UnknownPreset otherwise.

    ``file`` is the config file (its ``__file__``), named in the error.
    """
    names = sorted(presets)
    preset = arg or default
    if preset not in names:
        raise UnknownPreset(
            f"unknown preset {preset!r} for {_shown(file)}; valid presets: {', '.join(names)}"
        )
    return preset


def apply(
    config: ml_collections.ConfigDict, overrides: Mapping[str, Any]
) -> ml_collections.ConfigDict:
    """Sets every dotted field of ``overrides`` in order (by ``set_field``); returns ``config``."""
    for key, value in overrides.items():
        set_field(config, key, value, where="preset", add=True)
    return config
