"""A fast :func:`attrs.evolve` for the reducer's hot path.

``attrs.evolve`` looks the class's fields up and goes through ``__init__``
on every call; a step of the reducer makes a few changed copies, and that
was most of what a step cost. Here each class gets, once, a small
generated function that makes the copy by filling its slots: the changed
fields from the keyword arguments, the others from the old instance. It
is only for the frozen, slotted records of this package, none of which
has a validator or converter to skip.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import attrs

__all__ = ["evolve"]

T = TypeVar("T")

_COPIERS: dict[type, Callable[[Any, dict[str, Any]], Any]] = {}


def evolve(instance: T, **changes: Any) -> T:
    """A copy of ``instance`` with ``changes`` (what :func:`attrs.evolve`
    returns, faster)."""
    cls = type(instance)
    copy = _COPIERS.get(cls)
    if copy is None:
        copy = _COPIERS[cls] = _copier(cls)
    return copy(instance, changes)  # type: ignore[no-any-return]


def _copier(cls: type) -> Callable[[Any, dict[str, Any]], Any]:
    fields = attrs.fields(cls)
    if any(field.validator or field.converter for field in fields):
        raise TypeError(f"{cls.__name__} validates or converts: use attrs.evolve")
    names = [field.name for field in fields if field.init]
    # A slot's own descriptor writes it past the frozen class's __setattr__.
    scope: dict[str, Any] = {"cls": cls, "new": object.__new__, "known": frozenset(names)}
    lines = ["def copy(old, changes):"]
    lines.append("    if not changes.keys() <= known:")
    lines.append("        unknown = sorted(changes.keys() - known)")
    lines.append("        raise TypeError(f'{cls.__name__} has no field {unknown}')")
    lines.append("    made = new(cls)")
    for i, field in enumerate(fields):
        name = field.name
        scope[f"set{i}"] = cls.__dict__[name].__set__
        if not field.init:  # a cache of the old value's: as attrs.evolve, start afresh
            scope[f"default{i}"] = field.default
            lines.append(f"    set{i}(made, default{i})")
            continue
        lines.append(f"    set{i}(made, changes[{name!r}] if {name!r} in changes else old.{name})")
    lines.append("    return made")
    exec("\n".join(lines), scope)  # made from the class's own field names
    return scope["copy"]  # type: ignore[no-any-return]
