"""lash-machine: the lifecycle of durable LLM-agent sessions as a sans-IO
state machine.

Feed events to :func:`step`; carry out the effects it returns (or let a
driver from :mod:`lash_machine.drivers` do it against a store from
:mod:`lash_machine.stores`).
"""

from __future__ import annotations

from .errors import (
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
    SessionNotFound,
    StaleResult,
    StoreError,
    StoreFailure,
    TombstoneRefused,
    TransientStoreError,
    WireError,
)
from .graph import HealReport, LeafRepair, ParentRepair, SessionGraph, heal_graph
from .machine import TRANSITIONS, step
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
from .persisted import (
    ActivePath,
    AttachmentIntent,
    FullGraph,
    GraphDelta,
    ReadScope,
    Reparent,
    SessionCommit,
    SessionInfo,
    StoredSession,
    VacuumReport,
)
from .state import MachineState, Phase, SessionState

__version__ = "0.1.0"

__all__ = [
    "JSON",
    "TRANSITIONS",
    "UNCONFIGURED_POLICY",
    "ActivePath",
    "AgentFrame",
    "AttachmentIntent",
    "CommitOutcomeUnknown",
    "CorruptRow",
    "DriverClosed",
    "ErrorCode",
    "FullGraph",
    "GraphDelta",
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
    "ReadScope",
    "Reparent",
    "Residency",
    "ResidencyRequiresStore",
    "SchemaVersionMismatch",
    "SessionCommit",
    "SessionGraph",
    "SessionInfo",
    "SessionNode",
    "SessionNotFound",
    "SessionPolicy",
    "SessionState",
    "SessionView",
    "StaleResult",
    "StoreError",
    "StoreFailure",
    "StoredSession",
    "TombstoneRefused",
    "ToolSnapshot",
    "TransientStoreError",
    "VacuumReport",
    "WireError",
    "__version__",
    "heal_graph",
    "initial_frame_id",
    "step",
]
