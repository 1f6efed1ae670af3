"""A smoke subset of redis-py's OWN test suite against a 3-node phalanx (issue 13).

`benchmarks/redispy_suite.py` runs the whole of five redis-py test files against phalanx and a
redis-server (minutes); this runs SMOKE_TESTS below, 20 deterministic tests (no sleeps, no
threads, no timing) that passed on phalanx in the committed `benchmarks/redispy/RESULTS.md`,
through the same machinery, in well under 60 s, and fails if any of them does not pass. It
guards what redis-py (RESP3 by default, hiredis parser) sees of phalanx's replies, above the
reply-by-reply differential tests against redis-server.

Needs redis-py's sdist (`pip download redis==<pinned>`, cached in ~/.cache/phalanx/redispy) and
`packaging` (redis-py's conftest imports it; in the dev extra). Without them the test skips,
which PHALANX_NO_SKIPS=1 (CI) turns into a failure. The runner's INFO shim fills INFO fields
redis-py's conftest needs and phalanx lacks (`arch_bits` today) during its session start only.
Every process is stopped by pid (the runner's `Servers.stop`), also when the test fails.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import redispy_suite  # noqa: E402

# one or two per family: strings, keys, hashes, lists, sets, sorted sets, geo, pipelines
SMOKE_TESTS = [
    "test_commands.py::TestRedisCommands::test_get_and_set",
    "test_commands.py::TestRedisCommands::test_set_nx",
    "test_commands.py::TestRedisCommands::test_incrbyfloat",
    "test_commands.py::TestRedisCommands::test_getrange",
    "test_commands.py::TestRedisCommands::test_mget",
    "test_commands.py::TestRedisCommands::test_expire_option_nx",
    "test_commands.py::TestRedisCommands::test_rename",
    "test_commands.py::TestRedisCommands::test_scan_iter",
    "test_commands.py::TestRedisCommands::test_dump_and_restore",
    "test_commands.py::TestRedisCommands::test_hgetall",
    "test_commands.py::TestRedisCommands::test_hincrbyfloat",
    "test_commands.py::TestRedisCommands::test_hscan_iter",
    "test_commands.py::TestRedisCommands::test_lmove",
    "test_commands.py::TestRedisCommands::test_lpos",
    "test_commands.py::TestRedisCommands::test_sinterstore",
    "test_commands.py::TestRedisCommands::test_smismember",
    "test_commands.py::TestRedisCommands::test_zrangebylex",
    "test_commands.py::TestRedisCommands::test_zcount",
    "test_commands.py::TestRedisCommands::test_geodist_units",
    "test_pipeline.py::TestPipeline::test_pipeline_no_transaction",
]


def test_redispy_smoke_subset_passes_on_phalanx(tmp_path: Path) -> None:
    if importlib.util.find_spec("packaging") is None:
        pytest.skip("redis-py's conftest needs `packaging`: pip install -e '.[dev]'")
    try:
        sdist = redispy_suite.fetch_sdist(redispy_suite.pinned_redis_version(),
                                          redispy_suite.default_cache())
    except Exception as error:  # no network and no cached copy
        pytest.skip(f"cannot get redis-py's sdist: {error}")
    raw = tmp_path / "raw"
    raw.mkdir()
    args = SimpleNamespace(timeout=20, run_timeout=45, protocol=None)
    servers = redispy_suite.Servers(tmp_path)
    try:
        url = servers.start_phalanx()
        run = redispy_suite.run_suite("phalanx", url, sdist, SMOKE_TESTS, raw, args, shim=True)
    finally:
        servers.stop()
    assert run.aborted is None, run.aborted
    outcomes = {test_id: result.outcome for test_id, result in run.tests.items()}
    assert len(outcomes) == len(SMOKE_TESTS), sorted(outcomes)
    failed = {test_id: run.tests[test_id].text[-600:] for test_id, outcome in outcomes.items()
              if outcome != "passed"}
    assert not failed, failed
