"""The JSON wire format: every event, effect, state and handle, tagged.

A message is a JSON object with ``"format"`` (:data:`WIRE_FORMAT`) and
``"type"`` (``"events.Append"``, ``"effects.Commit"``, ``"state.MachineState"``,
...) beside the record's fields. Nested unions (read scopes, lifecycle
events) carry a ``"type"`` tag of their own.

One cattrs converter, made here and nowhere else, does all the work.
Decoding is strict: a wrong type, a missing or unknown field, or an unknown
tag raises :class:`~lash_machine.errors.WireError` naming the path of the bad
field, and nothing reaches the reducer.
"""

from __future__ import annotations

import json
from typing import Any, TypeAlias, TypeVar, get_args

import cattrs
import immutables
from cattrs.strategies import configure_tagged_union

from . import effects, events
from .errors import WireError
from .graph import SessionGraph
from .model import ParkedSession, SessionNode
from .persisted import ReadScope, SessionCommit, StoredSession
from .state import MachineState, Pending, SessionState

__all__ = [
    "WIRE_FORMAT",
    "Message",
    "dumps",
    "from_json",
    "loads",
    "structure",
    "to_json",
    "unstructure",
]

#: Bumped whenever an existing message changes shape.
WIRE_FORMAT = 1

Message: TypeAlias = (
    events.Event
    | effects.Effect
    | MachineState
    | SessionState
    | ParkedSession
    | StoredSession
    | SessionCommit
)

T = TypeVar("T")


def _tag(cls: type) -> str:
    return f"{cls.__module__.rsplit('.', 1)[-1]}.{cls.__name__}"


def _strict(kind: type, *, also: tuple[type, ...] = ()) -> Any:
    accepted = (kind, *also)

    def hook(value: Any, _: Any) -> Any:
        # bool is an int to Python, never to us.
        if isinstance(value, bool) and kind is not bool:
            raise TypeError(f"expected {kind.__name__}, got bool")
        if not isinstance(value, accepted):
            raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
        return kind(value)

    return hook


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True)
    converter.register_structure_hook(str, _strict(str))
    converter.register_structure_hook(int, _strict(int))
    converter.register_structure_hook(float, _strict(float, also=(int,)))
    converter.register_structure_hook(bool, _strict(bool))

    converter.register_unstructure_hook(
        SessionGraph,
        lambda graph: {
            "nodes": [converter.unstructure(node) for node in graph],
            "leaf_id": graph.leaf_id,
        },
    )

    def structure_graph(value: Any, _: Any) -> SessionGraph:
        if not isinstance(value, dict) or set(value) != {"nodes", "leaf_id"}:
            raise TypeError("expected an object with exactly 'nodes' and 'leaf_id'")
        nodes = converter.structure(value["nodes"], list[SessionNode])
        leaf_id = converter.structure(value["leaf_id"], str | None)  # type: ignore[arg-type]
        return SessionGraph.from_nodes(nodes, leaf_id)

    converter.register_structure_hook(SessionGraph, structure_graph)

    # The only persistent map on the wire is the outstanding-request table.
    converter.register_unstructure_hook_func(
        lambda cls: getattr(cls, "__origin__", cls) is immutables.Map,
        lambda mapping: [converter.unstructure(p) for _, p in sorted(mapping.items())],
    )

    def structure_outstanding(value: Any, _: Any) -> immutables.Map[int, Pending]:
        pending = converter.structure(value, list[Pending])
        return immutables.Map({p.request_id: p for p in pending})

    converter.register_structure_hook_func(
        lambda cls: getattr(cls, "__origin__", cls) is immutables.Map, structure_outstanding
    )

    for union in (ReadScope, effects.LifecycleEvent, Message):
        configure_tagged_union(union, converter, tag_generator=_tag, tag_name="type")
    return converter


_converter = _make_converter()

#: What the converter raises for input it cannot structure. RecursionError:
#: input nested deeper than the converter (or a repr in its messages) can go.
_DECODE_ERRORS = (
    cattrs.BaseValidationError,
    TypeError,
    ValueError,
    KeyError,
    AttributeError,
    RecursionError,
)
_TAGS = {_tag(cls): cls for cls in get_args(Message)}


def _shown(value: Any) -> str:
    """A short description of untrusted input for an error message: the
    repr of a short scalar, else its type (repr of deeply nested or huge
    input would itself fail)."""
    if value is None or isinstance(value, bool | float | str) or type(value) is int:
        try:
            text = repr(value)
        except ValueError:  # an int with more digits than str() allows
            return "a huge int"
        return text if len(text) <= 60 else f"{text[:57]}..."
    return f"a {type(value).__name__}"


def _decode_error(exc: BaseException, where: str) -> WireError:
    if isinstance(exc, cattrs.BaseValidationError):
        return WireError(f"malformed {where}", cattrs.transform_error(exc))
    return WireError(f"malformed {where}", [f"{exc} @ $"])


def unstructure(record: Any) -> Any:
    """A record as plain JSON-ready data, without format or type tags (the
    form stores keep policies, frames and snapshots in)."""
    return _converter.unstructure(record)


def structure(data: Any, cls: type[T]) -> T:
    """The inverse of :func:`unstructure`; raises :class:`WireError`."""
    try:
        return _converter.structure(data, cls)
    except _DECODE_ERRORS as exc:
        raise _decode_error(exc, cls.__name__) from None


def to_json(message: Message) -> dict[str, Any]:
    """A message as a JSON object with its ``format`` and ``type`` tags."""
    if _tag(type(message)) not in _TAGS:
        raise WireError(f"{type(message).__name__} is not a wire message")
    try:
        data: dict[str, Any] = _converter.unstructure(message, unstructure_as=Message)
    except RecursionError:
        raise WireError(f"cannot encode {type(message).__name__}: nested too deeply") from None
    return {"format": WIRE_FORMAT, **data}


def from_json(data: Any, expect: type[T] | None = None) -> T:
    """Decode a message from JSON data; with ``expect``, it must be of that
    type. Raises :class:`WireError` for anything malformed."""
    if not isinstance(data, dict):
        raise WireError("malformed message", [f"expected an object, got {type(data).__name__} @ $"])
    if data.get("format") != WIRE_FORMAT:
        raise WireError(
            "unsupported message",
            [f"format must be {WIRE_FORMAT}, got {_shown(data.get('format'))} @ $.format"],
        )
    tag = data.get("type")
    if not isinstance(tag, str) or tag not in _TAGS:
        raise WireError("unknown message", [f"no message type {_shown(tag)} @ $.type"])
    if expect is not None and not issubclass(_TAGS[tag], expect):
        raise WireError("unexpected message", [f"expected {expect.__name__}, got {tag} @ $.type"])
    body = {key: value for key, value in data.items() if key != "format"}
    try:
        decoded: Any = _converter.structure(body, Message)  # type: ignore[arg-type]
    except _DECODE_ERRORS as exc:
        raise _decode_error(exc, tag) from None
    return decoded  # type: ignore[no-any-return]


def dumps(message: Message) -> str:
    """Encode a message as compact JSON text."""
    try:
        return json.dumps(to_json(message), separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise WireError(f"cannot encode {type(message).__name__} as JSON", [str(exc)]) from None


def loads(text: str | bytes, expect: type[T] | None = None) -> T:
    """Decode a message from JSON text (see :func:`from_json`)."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise WireError("malformed JSON", [str(exc)]) from None
    return from_json(data, expect)
