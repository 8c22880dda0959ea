"""``python -m lash_machine``: the ``lash-machine`` command line."""

from __future__ import annotations

from .cli import main

raise SystemExit(main())
