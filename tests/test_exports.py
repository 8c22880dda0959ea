"""The public API is exported explicitly and documented."""

from __future__ import annotations

import importlib
import inspect

import pytest

import lash_machine

PUBLIC_MODULES = [
    "lash_machine",
    "lash_machine.model",
    "lash_machine.graph",
    "lash_machine.persisted",
    "lash_machine.events",
    "lash_machine.effects",
    "lash_machine.errors",
    "lash_machine.wire",
    "lash_machine.machine",
    "lash_machine.testing.healing",
    "lash_machine.testing.strategies",
]


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_every_exported_name_exists_and_is_documented(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__doc__, f"{name} has no docstring"
    for export in module.__all__:
        obj = getattr(module, export)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__doc__, f"{name}.{export} has no docstring"


def test_package_exports_every_public_record_of_the_core() -> None:
    for module_name in ("model", "graph", "persisted", "errors"):
        module = importlib.import_module(f"lash_machine.{module_name}")
        for export in getattr(module, "__all__", []):
            if module_name == "errors" and inspect.isfunction(getattr(module, export)):
                continue  # failure_of and error_from_failure are for transport writers
            assert export in lash_machine.__all__, f"lash_machine does not export {export}"
