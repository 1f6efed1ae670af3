"""Fixtures of the client tests: fake RESP nodes (unit) and a fast-retrying client factory."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fake_cluster import FakeCluster

from phalanx.client import PhalanxClient

ClientFactory = Callable[..., PhalanxClient]


@pytest.fixture
def fake() -> Iterator[FakeCluster]:
    cluster = FakeCluster()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def make_client(fake: FakeCluster) -> Iterator[ClientFactory]:
    clients: list[PhalanxClient] = []

    def make(seeds: list[str] | None = None, **options: Any) -> PhalanxClient:
        options.setdefault("backoff_base_s", 0.001)
        options.setdefault("backoff_max_s", 0.005)
        options.setdefault("request_timeout_s", 5.0)
        options.setdefault("socket_timeout", 2.0)
        client = PhalanxClient(seeds if seeds is not None else fake.seeds, **options)
        clients.append(client)
        return client

    try:
        yield make
    finally:
        for client in clients:
            client.close()
