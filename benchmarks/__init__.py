"""Benchmarks of lash_machine beside the raw database and LangGraph's checkpointers.

Run them all with ``python -m benchmarks`` (``--quick`` for a smoke run); see
``benchmarks/README.md``.
"""
