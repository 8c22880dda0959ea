"""What can go wrong, and what the caller should do about it.

Every exception of the package derives from :class:`LashMachineError`.
Errors raised by :func:`lash_machine.step` leave the caller's state exactly
as it was (the reducer never mutates its input), so the caller may keep
using that state.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

__all__ = [
    "CheckFailed",
    "CommitOutcomeUnknown",
    "DriverClosed",
    "ErrorCode",
    "StoreFailure",
    "code_of",
    "error_from_failure",
    "failure_of",
    "CorruptRow",
    "HeadRevisionConflict",
    "InvalidEvent",
    "LashMachineError",
    "LeaseHeld",
    "LeaseLost",
    "ModelSpecMissing",
    "ParentTombstoned",
    "ProtocolError",
    "ResidencyRequiresStore",
    "SchemaVersionMismatch",
    "SessionDeleted",
    "SessionNotFound",
    "StaleResult",
    "StoreError",
    "TombstoneRefused",
    "TransientStoreError",
    "WireError",
]


class ErrorCode(enum.StrEnum):
    """The short code of every failure that travels as data: in
    :class:`~lash_machine.events.EffectFailed`, in
    :class:`~lash_machine.effects.ReplyFailed` and over a transport. Each
    code names one exception class (:func:`error_from_failure`)."""

    STORE_ERROR = "store_error"
    HEAD_REVISION_CONFLICT = "head_revision_conflict"
    CORRUPT_ROW = "corrupt_row"
    SCHEMA_VERSION_MISMATCH = "schema_version_mismatch"
    SESSION_NOT_FOUND = "session_not_found"
    SESSION_DELETED = "session_deleted"
    LEASE_HELD = "lease_held"
    LEASE_LOST = "lease_lost"
    TOMBSTONE_REFUSED = "tombstone_refused"
    PARENT_TOMBSTONED = "parent_tombstoned"
    COMMIT_OUTCOME_UNKNOWN = "commit_outcome_unknown"
    TRANSIENT_STORE_ERROR = "transient_store_error"
    MODEL_SPEC_MISSING = "model_spec_missing"
    INVALID_EVENT = "invalid_event"
    WIRE_ERROR = "wire_error"
    TRANSPORT_ERROR = "transport_error"
    PROTOCOL_ERROR = "protocol_error"
    CANCELLED = "cancelled"
    CHECK_FAILED = "check_failed"


class LashMachineError(Exception):
    """Base class of every error this package raises on purpose.

    Errors pickle with their fields (they cross process pools and
    multiprocessing queues), and travel as their :attr:`code`, message and
    fields (:func:`failure_of`, :func:`error_from_failure`)."""

    #: The code this error travels as (subclasses that can fail an effect
    #: or a command name their own).
    code: ClassVar[ErrorCode] = ErrorCode.STORE_ERROR

    def __reduce__(self) -> tuple[object, ...]:
        state = {k: v for k, v in vars(self).items() if not k.startswith("__")}
        return (_rebuild, (type(self), self.args, state))


def _rebuild(
    cls: type[LashMachineError], args: tuple[object, ...], state: dict[str, object]
) -> LashMachineError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class ProtocolError(LashMachineError):
    """The event is not valid in the machine's current phase.

    Raised by :func:`~lash_machine.step` before anything changes: the state
    passed in is still valid. Fix the caller's sequencing (for example, do
    not ``Append`` to a parked session; ``Resume`` it first).
    """

    code = ErrorCode.PROTOCOL_ERROR

    def __init__(self, phase: str, event: str, reason: str = "") -> None:
        self.phase = phase
        self.event = event
        self.reason = reason
        detail = f": {reason}" if reason else ""
        super().__init__(f"{event} is not valid in phase {phase!r}{detail}")


class StaleResult(ProtocolError):
    """A result event answers a request the machine is not waiting for.

    Late, duplicated or forged results never change state. A driver that
    sees this has lost track of its requests; drop the result.
    """

    def __init__(self, phase: str, event: str, request_id: int) -> None:
        self.request_id = request_id
        super().__init__(phase, event, f"request {request_id} is not outstanding")


class InvalidEvent(ProtocolError):
    """The event fits the phase but its content does not fit the session
    (an unknown parent, a taken node id, a stale tool generation, ...).

    The message names what was wrong; correct the event and send it again.
    """

    code = ErrorCode.INVALID_EVENT


class ResidencyRequiresStore(InvalidEvent):
    """``ACTIVE_PATH_ONLY`` was asked for a session without a persistent
    store: the trimmed nodes could never be loaded again. Open with a store,
    or with ``KEEP_ALL``."""


class ModelSpecMissing(LashMachineError):
    """Neither the stored session, its frame, nor the caller's policy names a
    model. Pass a :class:`~lash_machine.model.SessionPolicy` whose model id
    is not blank."""

    code = ErrorCode.MODEL_SPEC_MISSING

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        super().__init__(
            f"session {session_id!r}: session policy missing model spec; "
            "supply a policy with an explicit model id"
        )


class WireError(LashMachineError):
    """A wire message could not be decoded or encoded.

    ``errors`` lists each problem with the path of the bad field, such as
    ``"expected str @ $.nodes[3].parent_id"``. Nothing of the message reached
    the reducer; reject the message.
    """

    code = ErrorCode.WIRE_ERROR

    def __init__(self, message: str, errors: Sequence[str] = ()) -> None:
        self.errors = tuple(errors)
        text = message if not self.errors else f"{message}: " + "; ".join(self.errors)
        super().__init__(text)


class StoreError(LashMachineError):
    """A store could not carry out a request. Nothing of a failed commit was
    applied; the session may retry or close."""


class HeadRevisionConflict(StoreError):
    """Another writer committed first: the stored head revision is not the
    one this commit expected, so none of this commit was applied.

    The session keeps its edits. Reload (close with ``discard=True`` and
    resume) to continue from ``actual``.
    """

    code = ErrorCode.HEAD_REVISION_CONFLICT

    def __init__(self, session_id: str, expected: int | None, actual: int | None) -> None:
        self.session_id = session_id
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"session {session_id!r}: commit expected head revision {expected}, store has {actual}"
        )


class SessionNotFound(StoreError):
    """The store has no session with that id."""

    code = ErrorCode.SESSION_NOT_FOUND

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        super().__init__(f"no session {session_id!r} in the store")


class SessionDeleted(SessionNotFound):
    """The session was deleted (or expired): the store keeps a marker so
    that a late commit, resume or open of its id never brings it back.
    ``deleted_at`` is when, in seconds since the epoch.

    Start a new session under another id. An operator can forget old
    markers (``lash-machine purge``); the id is then free again.
    """

    code = ErrorCode.SESSION_DELETED

    def __init__(self, session_id: str, deleted_at: float) -> None:
        self.session_id = session_id
        self.deleted_at = deleted_at
        StoreError.__init__(self, f"session {session_id!r} was deleted; it cannot be used again")


class CorruptRow(StoreError):
    """A stored row could not be decoded. Names the session and, for a node
    row, the node; the row is never skipped. Inspect it with
    ``lash-machine check``."""

    code = ErrorCode.CORRUPT_ROW

    def __init__(self, session_id: str, node_id: str | None, detail: str) -> None:
        self.session_id = session_id
        self.node_id = node_id
        self.detail = detail
        where = f"session {session_id!r}" + (f", node {node_id!r}" if node_id is not None else "")
        super().__init__(f"corrupt row in {where}: {detail}")


class SchemaVersionMismatch(StoreError):
    """The database was written by another schema version. Nothing is
    migrated silently: an older database is upgraded in place by
    ``lash-machine migrate`` (or a store made with ``migrate=True``); a
    newer one needs a newer lash-machine."""

    code = ErrorCode.SCHEMA_VERSION_MISMATCH

    def __init__(self, where: str, found: int, expected: int) -> None:
        self.found = found
        self.expected = expected
        hint = ""
        if 0 < found < expected:
            hint = "; upgrade it in place with `lash-machine migrate` (see --dry-run first)"
        elif found > expected:
            hint = "; it was written by a newer lash-machine"
        super().__init__(
            f"{where}: schema version {found}, this lash-machine expects {expected}{hint}"
        )


class LeaseHeld(StoreError):
    """Another worker holds the session's execution lease. Retry after the
    lease's time-to-live, or pick another session."""

    code = ErrorCode.LEASE_HELD

    def __init__(self, session_id: str, owner: str, expires_at: float) -> None:
        self.session_id = session_id
        self.owner = owner
        self.expires_at = expires_at
        super().__init__(f"session {session_id!r} is leased by {owner!r} until {expires_at}")


class LeaseLost(StoreError):
    """This worker's execution lease on the session is no longer current:
    it expired and another worker claimed the session, or it was released.
    A commit fenced with its token was refused with nothing applied, and a
    renewal fails.

    Stop working on the session: close it with ``discard=True`` and, when
    the work must go on, claim it again (open or resume) and redo the work
    from the stored head. ``token`` is the stale token; ``current`` the
    session's newest token (``None`` when it never had a lease).
    """

    code = ErrorCode.LEASE_LOST

    def __init__(self, session_id: str, token: int | None, current: int | None) -> None:
        self.session_id = session_id
        self.token = token
        self.current = current
        super().__init__(
            f"session {session_id!r}: lease token {token} is no longer current"
            f" (newest token {current}); claim the session again"
        )


class TombstoneRefused(StoreError):
    """A tombstone would hide a node the session still needs: one on the
    stored active path, or one with a live child outside the nodes being
    tombstoned (whose parent would then be gone). Nothing was hidden.

    Tombstone whole subtrees that are off the active path; list them with
    ``list_orphans``. ``node_id`` names the first node refused.
    """

    code = ErrorCode.TOMBSTONE_REFUSED

    def __init__(self, session_id: str, node_id: str, reason: str) -> None:
        self.session_id = session_id
        self.node_id = node_id
        self.reason = reason
        super().__init__(f"session {session_id!r}: cannot tombstone node {node_id!r}: {reason}")


class ParentTombstoned(StoreError):
    """A commit's new nodes, or its new leaf, hang off a node that was
    tombstoned since the session read it (an operator's prune, say).
    Nothing of the commit was applied: the store never revives what an
    operator hid, and never stores a node whose parent is gone.

    The session keeps its edits in memory. Branch to a live node and append
    again, or reload (close with ``discard=True`` and resume).
    """

    code = ErrorCode.PARENT_TOMBSTONED

    def __init__(self, session_id: str, node_id: str) -> None:
        self.session_id = session_id
        self.node_id = node_id
        super().__init__(
            f"session {session_id!r}: the commit builds on node {node_id!r},"
            " which is tombstoned; nothing was applied"
        )


class CommitOutcomeUnknown(StoreError):
    """The connection failed while a commit was in flight: the store may or
    may not have applied it. The session keeps its edits and marks the
    commit as in doubt.

    Save (or park) again: the retry carries the same commit id, so a store
    that applied the first attempt answers with its result instead of
    applying it twice. Resuming the session from the store settles it too.
    """

    code = ErrorCode.COMMIT_OUTCOME_UNKNOWN


class TransientStoreError(StoreError):
    """The database aborted the transaction for a reason a retry cures (a
    deadlock it broke, a serialization failure). Nothing was applied;
    retry the call."""

    code = ErrorCode.TRANSIENT_STORE_ERROR


class StoreFailure(StoreError):
    """A failure that came back as a code with no more specific exception
    to stand for it: an effect runner broke its contract (answered another
    request), a transport failed, or a runner sent a code this release does
    not know.

    ``code`` is the failure's :class:`ErrorCode` (or the unknown text) and
    ``operation`` the command that failed. The session is still usable:
    retry, or close it.
    """

    def __init__(self, operation: str, code: str, message: str) -> None:
        self.operation = operation
        self.failure_code = code
        super().__init__(f"{operation} failed ({code}): {message}")


class CheckFailed(LashMachineError):
    """A host's check (:class:`~lash_machine.checks.GraphCheck`) raised, or
    proposed a repair the machine refused (``reason`` says which and
    why; the original error is chained). The session was closed without
    saving anything, so the store is as it was: fix the check and open or
    resume again."""

    code = ErrorCode.CHECK_FAILED

    def __init__(self, check: str, session_id: str, reason: str) -> None:
        self.check = check
        self.session_id = session_id
        self.reason = reason
        super().__init__(f"session {session_id!r}: check {check!r} failed: {reason}")


class DriverClosed(LashMachineError):
    """The driver was closed (its worker threads stopped): it carries out
    nothing more. Sessions it opened can no longer save; make a new driver
    and resume them from the store."""

    def __init__(self, what: str) -> None:
        self.what = what
        super().__init__(f"{what}: the driver is closed")


#: Which exception each code stands for. TRANSPORT_ERROR, PROTOCOL_ERROR
#: and CANCELLED have none of their own: they come back as StoreFailure.
_BY_CODE: dict[ErrorCode, type[LashMachineError]] = {
    cls.code: cls
    for cls in (
        StoreError,
        HeadRevisionConflict,
        CorruptRow,
        SchemaVersionMismatch,
        SessionNotFound,
        SessionDeleted,
        LeaseHeld,
        LeaseLost,
        TombstoneRefused,
        ParentTombstoned,
        CommitOutcomeUnknown,
        TransientStoreError,
        ModelSpecMissing,
        InvalidEvent,
        WireError,
        CheckFailed,
    )
}

_FIELD_TYPES = (str, int, float, bool, type(None))


def failure_of(error: BaseException) -> tuple[ErrorCode, str, dict[str, Any]]:
    """How ``error`` travels: its code, its message, and its fields (those
    that are plain JSON scalars or lists of them). Anything that is not a
    :class:`LashMachineError` (a raw driver error from sqlite3 or psycopg,
    an OSError) is a store error whose message keeps its type visible."""
    if not isinstance(error, LashMachineError):
        return code_of(error), f"{type(error).__name__}: {error}", {}
    fields: dict[str, Any] = {}
    for name, value in vars(error).items():
        if name.startswith("_"):
            continue
        if isinstance(value, _FIELD_TYPES):
            fields[name] = value
        elif isinstance(value, tuple | list) and all(isinstance(v, _FIELD_TYPES) for v in value):
            fields[name] = list(value)
    return code_of(error), str(error), fields


def code_of(error: BaseException) -> ErrorCode:
    """The code ``error`` travels as (a store error for anything that is
    not one of ours)."""
    if isinstance(error, StoreFailure):
        return _known(error.failure_code)
    if isinstance(error, LashMachineError):
        return error.code
    return ErrorCode.STORE_ERROR


_CODES = frozenset(code.value for code in ErrorCode)


def _known(code: str) -> ErrorCode:
    try:
        return ErrorCode(code)
    except ValueError:
        return ErrorCode.STORE_ERROR


def error_from_failure(
    code: str, message: str, fields: Mapping[str, Any] | None = None, *, operation: str = ""
) -> LashMachineError:
    """The exception a failure stands for: the class its code names, with
    the message and fields it travelled with (so a :class:`LeaseHeld` that
    crossed a transport still has its ``owner`` and ``expires_at``). A code
    without a class of its own gives a :class:`StoreFailure` carrying the
    code and the operation."""
    known = _known(code) if code in _CODES else None
    cls = _BY_CODE.get(known) if known is not None else None
    if cls is None:
        return StoreFailure(operation or "the request", str(code), message)
    error: LashMachineError = cls.__new__(cls)
    Exception.__init__(error, message)
    for name, value in (fields or {}).items():
        setattr(error, name, tuple(value) if isinstance(value, list) else value)
    return error
