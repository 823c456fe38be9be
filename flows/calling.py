"""Calling a flow from synchronous code, whether the flow is sync or async.

The health flow is async (see flows/health.py); the drill, the dry runs, the
command line and the tests call every flow the same way through this.
"""
from __future__ import annotations

import asyncio
import inspect
from typing import Any

from prefect import Flow


def call_flow(flow: Flow, **params: Any) -> Any:
    """Run ``flow`` to its end and return what the call returns (a state with ``return_state=True``)."""
    outcome = flow(**params)
    return asyncio.run(outcome) if inspect.iscoroutine(outcome) else outcome
