"""Name -> constructor registries with one-line errors for unknown names and fields.

Every pluggable piece (optimizers, gradient filters, models, datasets, losses, schedules, probes)
lives in a :class:`Registry`. Configs name pieces by string; a wrong name or a keyword the
constructor does not take raises :class:`ConfigError` with a message that names the field and the
valid choices, which ``experiments.run`` prints as one line before exiting with code 2.
"""

from __future__ import annotations

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

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

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
        if name not in self._entries:
            field = f"{where}.name" if where else self.kind
            raise ConfigError(
                f"unknown {self.kind} {name!r} in {field}; valid choices: {_choices(self._entries)}"
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
