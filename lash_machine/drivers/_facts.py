"""What a driver's session object tells about itself, written once for the
async and the blocking sessions (read-only: no IO, no lock)."""

from __future__ import annotations

from ..model import ParkedSession, SessionView
from ..state import Phase, SessionState
from ..stores.leases import Lease
from ._loop import SessionLoop

__all__ = ["SessionFacts"]


class SessionFacts:
    """Read-only properties of a driven session."""

    _core: SessionLoop

    @property
    def session_id(self) -> str:
        """The session's id."""
        return self._core.session_id

    @property
    def phase(self) -> Phase:
        """Where the session is in its lifecycle (active, parked, closed, ...)."""
        return self._core.state.phase

    @property
    def state(self) -> SessionState | None:
        """The in-memory session (``None`` unless active); pass it to
        ``Driver.restore`` to rebuild the session without a store read."""
        return self._core.state.session

    @property
    def view(self) -> SessionView | None:
        """A small read view of the active session (``None`` otherwise)."""
        session = self._core.state.session
        return None if session is None else session.view(self._core.state.residency)

    @property
    def parked(self) -> ParkedSession | None:
        """The handle, once the session is parked."""
        return self._core.state.parked

    @property
    def lease(self) -> Lease | None:
        """The execution lease the session holds (``None`` without leases,
        or once parked or closed)."""
        keeper = self._core.lease
        return None if keeper is None else keeper.lease
