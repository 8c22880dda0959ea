"""The public API is exported explicitly and documented."""

from __future__ import annotations

import importlib
import inspect

import pytest

import lash_machine

PUBLIC_MODULES = [
    "lash_machine",
    "lash_machine.model",
    "lash_machine.content",
    "lash_machine.graph",
    "lash_machine.persisted",
    "lash_machine.state",
    "lash_machine.events",
    "lash_machine.effects",
    "lash_machine.errors",
    "lash_machine.wire",
    "lash_machine.machine",
    "lash_machine.checks",
    "lash_machine.stores",
    "lash_machine.stores.base",
    "lash_machine.stores.migrations",
    "lash_machine.drivers",
    "lash_machine.drivers.asyncio",
    "lash_machine.drivers.trio",
    "lash_machine.drivers.blocking",
    "lash_machine.transport",
    "lash_machine.testing.healing",
    "lash_machine.testing.checks",
    "lash_machine.testing.messages",
    "lash_machine.testing.strategies",
    "lash_machine.testing.records",
    "lash_machine.testing.races",
    "lash_machine.testing.conformance",
    "lash_machine.testing.lease_conformance",
]


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_every_exported_name_exists_and_is_documented(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__doc__, f"{name} has no docstring"
    for export in module.__all__:
        obj = getattr(module, export)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__doc__, f"{name}.{export} has no docstring"


def test_the_top_level_is_what_a_host_uses() -> None:
    """The reducer, the records a host builds, the graph and every error at
    the top; what stores and the machine exchange stays in persisted."""
    for module_name in ("model", "graph"):
        module = importlib.import_module(f"lash_machine.{module_name}")
        for export in module.__all__:
            assert export in lash_machine.__all__, f"lash_machine does not export {export}"
    errors = importlib.import_module("lash_machine.errors")
    for export in errors.__all__:
        if inspect.isclass(getattr(errors, export)):
            assert export in lash_machine.__all__, f"lash_machine does not export {export}"
    for name in ("step", "mermaid", "MachineState", "Phase", "SessionState", "events", "effects"):
        assert name in lash_machine.__all__
    persisted = importlib.import_module("lash_machine.persisted")
    for export in (*persisted.__all__, "TRANSITIONS"):
        assert export not in lash_machine.__all__, f"{export} belongs to its own module"
        assert not hasattr(lash_machine, export), f"lash_machine still offers {export}"


def test_importing_the_package_loads_no_io_module_and_testing_needs_no_pytest() -> None:
    """lash_machine.testing's records, races, strategies and healing import
    without pytest (only the conformance suites need it)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "class Refuse:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('pytest', '_pytest'):\n"
        "            raise ImportError('pytest is not installed')\n"
        "sys.meta_path.insert(0, Refuse())\n"
        "import lash_machine.testing.records, lash_machine.testing.races\n"
        "import lash_machine.testing.strategies, lash_machine.testing.healing\n"
        "try:\n"
        "    import lash_machine.testing.conformance\n"
        "except ImportError:\n"
        "    print('conformance needs pytest')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "conformance needs pytest"
