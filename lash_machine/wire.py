"""The JSON wire format: every event, effect, state and handle, tagged.

A message is a JSON object with ``"format"`` (:data:`WIRE_FORMAT`) and
``"type"`` (``"events.Append"``, ``"effects.Commit"``, ``"state.MachineState"``,
...) beside the record's fields. Nested unions (read scopes, lifecycle
events) carry a ``"type"`` tag of their own.

One cattrs converter, made here and nowhere else, does all the work.
Decoding is strict: a wrong type, a missing or unknown field, or an unknown
tag raises :class:`~lash_machine.errors.WireError` naming the path of the bad
field (``"unknown value 'bogus' for Residency @ $.residency"``), and nothing
reaches the reducer. In particular:

* enums decode to their members, never to plain text;
* ``format`` is the integer :data:`WIRE_FORMAT` (not ``true``, not ``1.0``);
* JSON text with ``NaN``, ``Infinity`` or a number too large for a float
  (``1e999``) is refused anywhere in the message; float fields must be
  finite, integer fields fit in 64 bits, and JSON payloads (bodies,
  snapshots, checkpoints) must be JSON as the stores write it
  (:func:`lash_machine.content.json_problem`), also from :func:`from_json`;
* a sequence field is a JSON array and a record a JSON object;
* a machine state must be one the reducer could have made (a session
  exactly when active or committing, an open in flight exactly when
  opening, outstanding request ids unique and below ``next_request_id``).
"""

from __future__ import annotations

import enum
import json
import math
from typing import Any, TypeAlias, TypeVar, get_args, get_origin

import attrs
import cattrs
import immutables
from cattrs import AttributeValidationNote, ClassValidationError, ForbiddenExtraKeysError
from cattrs.cols import homogenous_tuple_structure_factory, list_structure_factory
from cattrs.strategies import configure_tagged_union
from cattrs.v import format_exception, transform_error

from . import effects, events
from .content import json_problem
from .errors import WireError
from .graph import SessionGraph
from .model import ParkedSession, SessionNode
from .persisted import ReadScope, SessionCommit, StoredSession
from .state import MachineState, Pending, Phase, SessionState

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


#: The range of the integer fields (revisions, request ids, counters): what
#: a 64-bit database column holds.
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1


class _Refused(ValueError):
    """A value a hook of ours refuses; its text is the whole message (the
    path is added when the error is rendered)."""


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


def _kind_of(value: Any) -> str:
    """What a JSON value is, in JSON's words."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list | tuple):
        return "an array"
    return _shown(value)


def _structure_enum(value: Any, cls: type[enum.Enum]) -> Any:
    if isinstance(value, cls):
        return value
    values = [member.value for member in cls]
    expected = ", ".join(repr(v) for v in values)
    # Exact types: True is not 1 and a float is not an int, here as elsewhere.
    if any(type(value) is type(v) for v in values):
        for member in cls:
            if member.value == value:
                return member
        raise _Refused(f"unknown value {_shown(value)} for {cls.__name__} (one of {expected})")
    raise _Refused(f"got {_shown(value)}, expected {cls.__name__} (one of {expected})")


def _strict(kind: type) -> Any:
    def hook(value: Any, cls: Any) -> Any:
        # The hook is found by class: an enum with a str (or int) mixin
        # lands here, and must be decoded to its member, not to plain text.
        if cls is not kind and isinstance(cls, type) and issubclass(cls, enum.Enum):
            return _structure_enum(value, cls)
        # bool is an int to Python, never to us.
        if type(value) is bool and kind is not bool:
            raise _Refused(f"got a bool, expected {kind.__name__}")
        if not isinstance(value, kind):
            # "expected str @ $.path" last: the form errors.py documents.
            raise _Refused(f"got {_shown(value)}, expected {kind.__name__}")
        if isinstance(value, int) and kind is int and not _INT_MIN <= value <= _INT_MAX:
            raise _Refused("expected an int of at most 64 bits (as the stores keep them)")
        return kind(value)

    return hook


def _structure_float(value: Any, _: Any) -> float:
    if type(value) is bool or not isinstance(value, int | float):
        raise _Refused(f"expected a number, got {_shown(value)}")
    try:
        number = float(value)
    except OverflowError:
        raise _Refused("expected a finite number, got an int too large for a float") from None
    if not math.isfinite(number):
        raise _Refused(f"expected a finite number, got {number}")
    return number


def _structure_json(value: Any, _: Any) -> Any:
    """Payloads typed ``JSON`` (bodies, snapshot data, checkpoints) must be
    JSON as the stores write it back, or memory and store would disagree."""
    problem = json_problem(value, "value")
    if problem is not None:
        raise _Refused(f"not JSON: {problem}")
    return value


def _is_array(cls: Any) -> bool:
    """A homogeneous sequence type: ``tuple[X, ...]`` or ``list[X]``."""
    origin = get_origin(cls)
    args = get_args(cls)
    if origin is list:
        return len(args) == 1
    return origin is tuple and len(args) == 2 and args[1] is Ellipsis


def _register_scalars(converter: cattrs.Converter) -> None:
    converter.register_structure_hook(str, _strict(str))
    converter.register_structure_hook(int, _strict(int))
    converter.register_structure_hook(bool, _strict(bool))
    converter.register_structure_hook(float, _structure_float)
    # Enums without a str or int mixin (with one, the class hooks above
    # are found first and hand over to the same function).
    converter.register_structure_hook(enum.Enum, _structure_enum)
    converter.register_structure_hook_func(lambda cls: cls is Any, _structure_json)


def _register_containers(converter: cattrs.Converter) -> None:
    """Arrays must be JSON arrays and records JSON objects: cattrs alone
    would iterate anything (a dict's keys, a string's letters)."""

    def array_hook(cls: Any) -> Any:
        elements = (
            list_structure_factory(cls, converter)
            if get_origin(cls) is list
            else homogenous_tuple_structure_factory(cls, converter)
        )

        def structure_array(value: Any, _: Any) -> Any:
            if not isinstance(value, list | tuple):
                raise _Refused(f"expected an array, got {_kind_of(value)}")
            return elements(value, cls)

        return structure_array

    def record_hook(cls: Any) -> Any:
        fields = converter.gen_structure_attrs_fromdict(cls)

        def structure_record(value: Any, _: Any) -> Any:
            if not isinstance(value, dict):
                raise _Refused(f"expected an object, got {_kind_of(value)}")
            return fields(value, cls)

        return structure_record

    converter.register_structure_hook_factory(_is_array, array_hook)
    converter.register_structure_hook_factory(attrs.has, record_hook)


def _register_graph(converter: cattrs.Converter) -> None:
    converter.register_unstructure_hook(
        SessionGraph,
        lambda graph: {
            "nodes": [converter.unstructure(node) for node in graph],
            "leaf_id": graph.leaf_id,
        },
    )

    def structure_graph(value: Any, _: Any) -> SessionGraph:
        if not isinstance(value, dict):
            raise _Refused(f"expected an object, got {_kind_of(value)}")
        extra = set(value) - {"nodes", "leaf_id"}
        if extra:
            raise ForbiddenExtraKeysError("", SessionGraph, extra)
        parts = _fields_of(
            converter,
            SessionGraph,
            value,
            {"nodes": tuple[SessionNode, ...], "leaf_id": str | None},
        )
        return SessionGraph.from_nodes(parts["nodes"], parts["leaf_id"])

    converter.register_structure_hook(SessionGraph, structure_graph)


def _register_machine_state(converter: cattrs.Converter) -> None:
    # The only persistent map on the wire is the outstanding-request table,
    # sent as a list of its entries.
    def is_map(cls: Any) -> bool:
        return getattr(cls, "__origin__", cls) is immutables.Map

    converter.register_unstructure_hook_func(
        is_map, lambda mapping: [converter.unstructure(p) for _, p in sorted(mapping.items())]
    )

    def structure_outstanding(value: Any, _: Any) -> immutables.Map[int, Pending]:
        pending = converter.structure(value, tuple[Pending, ...])
        table = immutables.Map({p.request_id: p for p in pending})
        if len(table) != len(pending):
            raise _Refused("a request id is outstanding twice")
        return table

    converter.register_structure_hook_func(is_map, structure_outstanding)

    # A machine state step() could never have made would trip the
    # reducer's own assertions: refuse it here, where it comes in.
    structure_state = converter.get_structure_hook(MachineState)

    def structure_machine_state(value: Any, cls: Any) -> MachineState:
        state: MachineState = structure_state(value, cls)
        problem = _state_problem(state)
        if problem is not None:
            raise _Refused(problem)
        return state

    converter.register_structure_hook(MachineState, structure_machine_state)


def _register_union(converter: cattrs.Converter, union: Any) -> None:
    configure_tagged_union(union, converter, tag_generator=_tag, tag_name="type")
    tagged = converter.get_structure_hook(union)
    tags = {_tag(cls) for cls in get_args(union)}

    def structure_union(value: Any, cls: Any) -> Any:
        if not isinstance(value, dict):
            raise _Refused(f"expected an object, got {_kind_of(value)}")
        tag = value.get("type")
        if tag not in tags:
            raise _Refused(f"no type {_shown(tag)} here (one of {', '.join(sorted(tags))})")
        return tagged(value, cls)

    converter.register_structure_hook(union, structure_union)


def _make_converter() -> cattrs.Converter:
    # Order matters: a record's hook is generated from the hooks of its
    # fields as registered when it is first asked for.
    converter = cattrs.Converter(forbid_extra_keys=True)
    _register_scalars(converter)
    _register_containers(converter)
    _register_graph(converter)
    _register_machine_state(converter)
    for union in (ReadScope, effects.LifecycleEvent, Message):
        _register_union(converter, union)
    return converter


def _fields_of(
    converter: cattrs.Converter, cls: type, value: dict[str, Any], types: dict[str, Any]
) -> dict[str, Any]:
    """Structure the fields of a hand-decoded record, reporting every bad
    one with its path, as cattrs does for the records it decodes itself."""
    parts: dict[str, Any] = {}
    errors: list[Exception] = []
    for name, kind in types.items():
        try:
            parts[name] = converter.structure(value[name], kind)
        except Exception as exc:  # collected, re-raised below as one group
            note = AttributeValidationNote(f"Structuring {cls.__name__} @ {name}", name, kind)
            exc.__notes__ = [*getattr(exc, "__notes__", []), note]
            errors.append(exc)
    if errors:
        raise ClassValidationError(f"While structuring {cls.__name__}", errors, cls)
    return parts


def _state_problem(state: MachineState) -> str | None:
    holds_session = state.phase in (Phase.ACTIVE, Phase.COMMITTING)
    if holds_session != (state.session is not None):
        held = "holds no session" if state.session is None else "holds a session"
        return f"a machine in phase {state.phase.value!r} {held}"
    if (state.phase is Phase.OPENING) != (state.opening is not None):
        held = "has no open in flight" if state.opening is None else "has an open in flight"
        return f"a machine in phase {state.phase.value!r} {held}"
    if state.phase is Phase.PARKED and state.parked is None:
        return "a parked machine holds no parked handle"
    if any(request_id >= state.next_request_id for request_id in state.outstanding):
        return "an outstanding request id is not below next_request_id"
    return None


_converter = _make_converter()

#: What the converter raises for input it cannot structure. RecursionError:
#: input nested deeper than the converter (or a repr in its messages) can go.
_DECODE_ERRORS = (
    cattrs.BaseValidationError,
    TypeError,
    ValueError,
    KeyError,
    AttributeError,
    ArithmeticError,
    RecursionError,
)
_TAGS = {_tag(cls): cls for cls in get_args(Message)}


def _format(exc: BaseException, kind: Any) -> str:
    if isinstance(exc, _Refused):
        return str(exc)
    return format_exception(exc, kind)


def _decode_error(exc: BaseException, where: str) -> WireError:
    if isinstance(exc, cattrs.BaseValidationError):
        try:
            return WireError(f"malformed {where}", transform_error(exc, format_exception=_format))
        except RecursionError:
            pass
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
    version = data.get("format")
    # Exact type: JSON's true and 1.0 are not the format number 1.
    if type(version) is not int or version != WIRE_FORMAT:
        raise WireError(
            "unsupported message",
            [f"format must be {WIRE_FORMAT}, got {_shown(version)} @ $.format"],
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


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"the number {text[:40]} does not fit in a float")
    return number


def loads(text: str | bytes, expect: type[T] | None = None) -> T:
    """Decode a message from JSON text (see :func:`from_json`).

    Strict JSON: ``NaN``, ``Infinity`` and ``-Infinity`` (which Python's
    json module accepts) and numbers too large for a float (``1e999``) are
    refused, as :func:`dumps` would never write them."""
    try:
        data = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except (ValueError, RecursionError) as exc:
        raise WireError("malformed JSON", [str(exc)]) from None
    return from_json(data, expect)
