"""Carry store effects to another process, as lines of wire JSON.

The machine (and its driver) may run in one process while another owns the
store. Over any byte stream (a pipe to a child process, a socket), each
store request travels as one line of :func:`lash_machine.wire.dumps`, and
its result event comes back the same way:

* :func:`serve_store` is the store's side: it answers requests until the
  stream ends;
* :class:`RemoteStore` is the machine's side: an
  :class:`~lash_machine.drivers.store_effects.EffectRunner`, so any driver
  takes it as ``Driver(runner=RemoteStore(reader, writer))``.

Requests are answered strictly in order, one at a time. A broken stream,
or an answer to another request, fails the request with
``"transport_error"`` (raised as
:class:`~lash_machine.drivers.store_effects.StoreFailure`) and every later
one too: reconnect with a new :class:`RemoteStore`. A write whose answer was
lost may have been applied; the session's next commit then meets
:class:`~lash_machine.errors.HeadRevisionConflict`, and the caller reloads.
"""

from __future__ import annotations

import contextlib
import json
import threading
from typing import Protocol

from . import effects as fx
from . import events as ev
from . import wire
from .drivers.store_effects import Outcome, carry_out
from .errors import CommitOutcomeUnknown, ErrorCode, StoreFailure, WireError
from .stores.base import SessionStore

__all__ = ["LineReader", "LineWriter", "RemoteStore", "serve_store"]


class LineReader(Protocol):
    """The reading end of a byte stream (a pipe, ``socket.makefile("rb")``)."""

    def readline(self) -> bytes:
        """One line, with its newline; ``b""`` at the end of the stream."""
        ...


class LineWriter(Protocol):
    """The writing end of a byte stream (a pipe, ``socket.makefile("wb")``)."""

    def write(self, data: bytes, /) -> object:
        """Write bytes."""
        ...

    def flush(self) -> object:
        """Send what was written."""
        ...


def _request_id(line: bytes) -> int | None:
    """The request id of a message that failed to decode, when it has one
    (so the failure can still be answered)."""
    try:
        data = json.loads(line)
    except (ValueError, RecursionError):  # not JSON, or nested past the parser
        return None
    request_id = data.get("request_id") if isinstance(data, dict) else None
    return request_id if type(request_id) is int else None


def _failed(request_id: int, error: WireError) -> str:
    return wire.dumps(ev.EffectFailed(request_id, ErrorCode.WIRE_ERROR, str(error)))


def _answer(store: SessionStore, line: bytes) -> str:
    try:
        request: wire.Message = wire.loads(line)
        if not isinstance(request, fx.StoreRequest):
            raise WireError(
                "unexpected message", [f"{type(request).__name__} is not a store request"]
            )
    except WireError as error:
        request_id = _request_id(line)
        if request_id is None:
            raise  # nothing to answer it with: the peer has lost the protocol
        return _failed(request_id, error)
    result = carry_out(store, request).result
    try:
        return wire.dumps(result)
    except WireError as error:
        # A value JSON cannot carry (an infinity in a body a legacy row
        # holds): the request fails, the stream stays in step.
        return _failed(request.request_id, error)


def serve_store(store: SessionStore, reader: LineReader, writer: LineWriter) -> int:
    """Answer store requests from ``reader`` on ``writer`` until the stream
    ends; return how many were answered.

    Every request that can be parsed is answered, with its result or an
    ``EffectFailed``: store failures as a local driver would feed them (or
    ``CommitConflicted``); a malformed request that still names a
    ``request_id``, and a result that cannot be encoded (a stored value
    JSON cannot carry), with ``EffectFailed(..., "wire_error")``. No
    encoding or decoding error of one message stops the loop. Only a line
    that names no ``request_id`` (not JSON, nested deeper than the parser
    goes, or without the field) raises
    :class:`~lash_machine.errors.WireError`, since its sender can no longer
    be answered in order. A last line without its newline is a request
    its sender did not finish writing: it is not run (the sender counts it
    as never sent), and the loop ends as at the end of the stream.
    """
    answered = 0
    for line in iter(reader.readline, b""):
        if not line.endswith(b"\n"):
            break
        if not line.strip():
            continue
        writer.write(_answer(store, line).encode() + b"\n")
        writer.flush()
        answered += 1
    return answered


class RemoteStore:
    """An effect runner that sends each store request to a process running
    :func:`serve_store` and reads its result back.

    Safe to share between sessions and threads: one request is on the
    stream at a time. A request abandoned by a cancelled read still
    completes in its worker thread, so the stream stays in step.
    """

    def __init__(self, reader: LineReader, writer: LineWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._lock = threading.Lock()
        self._broken: str | None = None
        self._sent = False

    def __call__(self, request: fx.StoreRequest) -> Outcome:
        """Carry ``request`` out remotely; failures come back as
        ``EffectFailed`` outcomes, never as exceptions."""
        rid = request.request_id
        try:
            line = wire.dumps(request).encode() + b"\n"
        except WireError as error:
            return Outcome(ev.EffectFailed(rid, ErrorCode.WIRE_ERROR, str(error)), error)
        with self._lock:
            try:
                result = self._exchange(line, rid)
            except (OSError, WireError) as error:
                # Whatever was half-sent or half-read, the stream is out of step now.
                self._broken = self._broken or str(error)
                return Outcome(ev.EffectFailed(rid, *self._lost(request, error)), None)
        return Outcome(result)

    def _exchange(self, line: bytes, request_id: int) -> ev.Result:
        self._sent = False
        if self._broken is not None:
            raise ConnectionError(f"the connection to the store is broken: {self._broken}")
        self._writer.write(line)
        self._writer.flush()
        # From here on the store may have the request. A write that failed
        # left it without a whole line, which the serving side never runs.
        self._sent = True
        answer = self._reader.readline()
        if not answer:
            raise ConnectionError("the store process closed the connection")
        result: wire.Message = wire.loads(answer)
        if not isinstance(result, ev.Result):
            raise WireError("unexpected answer", [f"{type(result).__name__} is not a result"])
        if result.request_id != request_id:
            raise WireError(
                "unexpected answer", [f"answers request {result.request_id}, not {request_id}"]
            )
        return result

    def _lost(self, request: fx.StoreRequest, error: Exception) -> tuple[ErrorCode, str]:
        """How a request whose answer never came fails: a commit that may
        have reached the store is in doubt (the session sends it again, by
        its id, once reconnected); anything else is a transport error."""
        if isinstance(request, fx.Commit) and self._sent:
            unknown = CommitOutcomeUnknown(
                f"session {request.commit.session_id!r}: the answer to the commit was lost"
                f" ({error}); it may have been applied"
            )
            return unknown.code, str(unknown)
        failure = StoreFailure(type(request).__name__, ErrorCode.TRANSPORT_ERROR, str(error))
        return ErrorCode.TRANSPORT_ERROR, str(failure)

    def close(self) -> None:
        """Close the writing end: the serving side sees the end of its stream."""
        close = getattr(self._writer, "close", None)
        if close is not None:
            with contextlib.suppress(OSError):  # already broken: closed either way
                close()
