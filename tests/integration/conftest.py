"""Fixtures of the integration tests: real phalanx node processes on loopback.

`cluster(n, **overrides)` starts an n-node local cluster (fault injection enabled) and returns
an `integration_harness.LocalCluster`; every cluster is killed (by pid) and its files removed at
teardown. When a test fails, the tail of every node's log is attached to the report.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from integration_harness import LocalCluster

ClusterFactory = Callable[..., LocalCluster]


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


_FAILED = pytest.StashKey[bool]()


@pytest.fixture
def cluster(request: pytest.FixtureRequest) -> Iterator[ClusterFactory]:
    started: list[LocalCluster] = []

    def start(nodes: int = 3, **overrides: Any) -> LocalCluster:
        name = request.node.name.replace("[", "-").replace("]", "")[:40]
        instance = LocalCluster(nodes, overrides=overrides, name=name)
        started.append(instance)
        return instance

    try:
        yield start
    finally:
        for instance in started:
            if request.node.stash.get(_FAILED, False):
                sys.stderr.write(f"\n==== node logs of {request.node.name} ====")
                sys.stderr.write(instance.logs(60) + "\n")
            instance.close()
