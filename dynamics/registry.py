"""Name -> constructor registries with one-line errors for unknown names and fields.

Every pluggable piece (optimizers, gradient filters, models, datasets, losses, schedules, probes)
lives in a :class:`Registry`. Configs name pieces by string; a wrong name or a keyword the
constructor does not take raises :class:`ConfigError` with a message that names the field and the
valid choices, which ``experiments.run`` prints as one line before exiting with code 2.

A registry made with ``by_path`` also accepts an import path ``"package.module:attribute"``
(``"optax:lion"``, ``"my_pkg.nets:ResNet"``): :func:`import_path` imports the attribute and
``by_path(obj, name, where)`` turns it into a constructor with the registry's calling convention
and a signature that :func:`check_kwargs` validates like a registered entry's.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

T = TypeVar("T", bound=Callable[..., Any])


class ConfigError(ValueError):
    """A configuration names something that does not exist or has the wrong type or shape."""


def _choices(names: Iterable[str]) -> str:
    return ", ".join(sorted(names))


def check_kwargs(fn: Callable[..., Any], kwargs: Mapping[str, Any], where: str) -> None:
    """Raises ConfigError if ``fn`` does not accept every key of ``kwargs``.

    Args:
      fn: the constructor that will receive ``**kwargs``.
      kwargs: the keyword arguments taken from a config.
      where: the config path of ``kwargs`` (e.g. ``"optimizer"``), used in the message.
    """
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    valid = [
        n
        for n, p in params.items()
        if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    unknown = [k for k in kwargs if k not in valid]
    if unknown:
        raise ConfigError(
            f"unknown field {where}.{unknown[0]} for {getattr(fn, '__name__', fn)!s}; "
            f"valid fields: {_choices(valid)}"
        )


def is_import_path(name: str) -> bool:
    """Whether a config name is ``"module:attribute"`` rather than a registered name."""
    return isinstance(name, str) and ":" in name


def import_path(name: str, where: str) -> Any:
    """The object ``module:attribute`` names (``attribute`` may be dotted), or ConfigError.

    Example:
      >>> import_path("optax:lion", "optimizer").__name__
      'lion'
    """
    module_name, _, attribute = name.partition(":")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"cannot import {where}.name {name!r}: {e}") from e
    for part in attribute.split("."):
        if not part or not hasattr(obj, part):
            raise ConfigError(
                f"cannot import {where}.name {name!r}: module {module_name!r} has no "
                f"attribute {attribute!r}"
            )
        obj = getattr(obj, part)
    return obj


class Registry(Generic[T]):
    """A mapping from names to constructors of one kind of thing.

    Example:
      >>> MODELS = Registry("model")
      >>> @MODELS.register("mlp")
      ... def mlp(widths=(32,)):
      ...     return widths
      >>> MODELS.build("mlp", {"widths": (8, 8)}, where="model")
      (8, 8)
    """

    def __init__(self, kind: str, by_path: Callable[[Any, str, str], T] | None = None):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._by_path = by_path

    def register(self, name: str, fn: T | None = None):
        """Registers ``fn`` under ``name``; usable as ``@REG.register("name")``."""

        def add(f: T) -> T:
            if name in self._entries and self._entries[name] is not f:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = f
            return f

        return add(fn) if fn is not None else add

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def get(self, name: str, where: str | None = None) -> T:
        """Returns the constructor ``name`` or raises ConfigError naming the valid choices."""
        if self._by_path is not None and is_import_path(name):
            return self._by_path(import_path(name, where or self.kind), name, where or self.kind)
        if name not in self._entries:
            field = f"{where}.name" if where else self.kind
            raise ConfigError(
                f"unknown {self.kind} {name!r} in {field}; valid choices: {_choices(self._entries)}"
                + (" or an import path module:attribute" if self._by_path else "")
            )
        return self._entries[name]

    def build(self, name: str, kwargs: Mapping[str, Any] | None = None, where: str | None = None):
        """Calls the constructor ``name`` with ``kwargs`` after checking every key is accepted.

        A ``TypeError`` or ``ValueError`` (``ConfigError`` included) the constructor raises for a
        value comes out as a ``ConfigError`` naming ``where``.
        """
        fn = self.get(name, where)
        kwargs = dict(kwargs or {})
        check_kwargs(fn, kwargs, where or self.kind)
        try:
            return fn(**kwargs)
        except (TypeError, ValueError) as e:
            # A constructor rejecting a value is a config error: one line, naming the section.
            message = " ".join(str(e).split()) or type(e).__name__
            raise ConfigError(f"{where or self.kind} ({name}): {message}") from e
