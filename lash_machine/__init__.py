"""lash-machine: the lifecycle of durable LLM-agent sessions as a sans-IO
state machine.

Feed events (:mod:`lash_machine.events`) to :func:`step`; carry out the
effects (:mod:`lash_machine.effects`) it returns, or let a driver from
:mod:`lash_machine.drivers` do it against a store from
:mod:`lash_machine.stores`. The top level holds what a host uses: the
reducer, the records a host builds, the graph and its healing, and every
error. What stores exchange with the machine (read scopes, commits, stored
sessions) is in :mod:`lash_machine.persisted`; the phase table in
:mod:`lash_machine.machine`; the codec in :mod:`lash_machine.wire`.
"""

from __future__ import annotations

from . import effects, events
from .errors import (
    CheckFailed,
    CommitOutcomeUnknown,
    CorruptRow,
    DriverClosed,
    ErrorCode,
    HeadRevisionConflict,
    InvalidEvent,
    LashMachineError,
    LeaseHeld,
    LeaseLost,
    ModelSpecMissing,
    ParentTombstoned,
    ProtocolError,
    ResidencyRequiresStore,
    SchemaVersionMismatch,
    SessionDeleted,
    SessionNotFound,
    StaleResult,
    StoreError,
    StoreFailure,
    TombstoneRefused,
    TransientStoreError,
    WireError,
)
from .graph import HealReport, LeafRepair, ParentRepair, SessionGraph, heal_graph
from .machine import mermaid, step
from .model import (
    JSON,
    UNCONFIGURED_POLICY,
    AgentFrame,
    ModelSpec,
    NodeKind,
    ParkedSession,
    PluginSnapshot,
    Residency,
    SessionNode,
    SessionPolicy,
    SessionView,
    ToolSnapshot,
    initial_frame_id,
)
from .state import MachineState, Phase, SessionState

__version__ = "0.1.0"

__all__ = [
    "JSON",
    "UNCONFIGURED_POLICY",
    "AgentFrame",
    "CheckFailed",
    "CommitOutcomeUnknown",
    "CorruptRow",
    "DriverClosed",
    "ErrorCode",
    "HeadRevisionConflict",
    "HealReport",
    "InvalidEvent",
    "LashMachineError",
    "LeafRepair",
    "LeaseHeld",
    "LeaseLost",
    "MachineState",
    "ModelSpec",
    "ModelSpecMissing",
    "NodeKind",
    "ParentRepair",
    "ParentTombstoned",
    "ParkedSession",
    "Phase",
    "PluginSnapshot",
    "ProtocolError",
    "Residency",
    "ResidencyRequiresStore",
    "SchemaVersionMismatch",
    "SessionDeleted",
    "SessionGraph",
    "SessionNode",
    "SessionNotFound",
    "SessionPolicy",
    "SessionState",
    "SessionView",
    "StaleResult",
    "StoreError",
    "StoreFailure",
    "ToolSnapshot",
    "TombstoneRefused",
    "TransientStoreError",
    "WireError",
    "__version__",
    "effects",
    "events",
    "heal_graph",
    "initial_frame_id",
    "mermaid",
    "step",
]
