"""Where drivers hand host effects and lifecycle notifications.

The machine asks the host to restore a tool surface or plugins, to forget a
session's plugin state, and tells it about lifecycle events. A host
registers plain callables here; several may listen to the same kind (the
effect is fanned out to each, in registration order).

Hooks run on the driver's thread (the event loop, for the async drivers),
after the machine has taken the step that produced the effect. Keep them
quick; to do IO, hand the work to a task of your own, and never call back
into the same session from a hook (its calls are serialized).

A hook that raises does not stop the others, nor the machine: the call that
produced the effect finishes, then raises the first hook error. The
session is then in the state the call put it in (an open or resume that
raised this way leaves only an unchanged, already stored session behind;
retry it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from .. import effects as fx

__all__ = ["Hooks"]

H = TypeVar("H", bound=fx.HostEffect)


class Hooks:
    """A registry of host hooks, shared by every session of a driver.

    >>> hooks = Hooks()
    >>> seen = []
    >>> stop = hooks.on_lifecycle(seen.append)
    >>> stop()  # unsubscribe
    """

    def __init__(self) -> None:
        self._hooks: dict[type, list[Callable[[object], None]]] = {}

    def on(self, kind: type[H], hook: Callable[[H], None]) -> Callable[[], None]:
        """Call ``hook(effect)`` for every effect of type ``kind``
        (:class:`~lash_machine.effects.RestoreToolSurface`,
        :class:`~lash_machine.effects.RestorePlugins`,
        :class:`~lash_machine.effects.UnregisterPluginSession` or
        :class:`~lash_machine.effects.EmitLifecycle`). Returns a function
        that removes the hook again."""
        hooks = self._hooks.setdefault(kind, [])
        entry: Callable[[object], None] = hook  # type: ignore[assignment]
        hooks.append(entry)

        def remove() -> None:
            if entry in hooks:
                hooks.remove(entry)

        return remove

    def on_lifecycle(self, listener: Callable[[fx.LifecycleEvent], None]) -> Callable[[], None]:
        """Call ``listener(event)`` for every lifecycle event (opened,
        restored, healed, saved, commit conflict, parked, closed). Returns a
        function that removes the listener again."""
        return self.on(fx.EmitLifecycle, lambda effect: listener(effect.event))

    def dispatch(self, effect: fx.HostEffect) -> None:
        """Hand ``effect`` to each hook registered for its type. Every hook
        runs even when an earlier one raises; then the first error is
        raised."""
        first: Exception | None = None
        # Copy: a hook may unsubscribe itself (or another) while we iterate.
        for hook in list(self._hooks.get(type(effect), ())):
            try:
                hook(effect)
            except Exception as error:  # one failing listener must not silence the others
                first = first or error
        if first is not None:
            raise first
