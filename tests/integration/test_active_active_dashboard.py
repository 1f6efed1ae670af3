"""The dashboard and `phalanx status` show each region link (issue 18 item 6): two linked
regions of real node processes; in a real headless Chromium a dc2 node's page lists its link
to dc1 as up, then down with the cut's error while the link is cut (`phalanx status` says so
too), then up again after the heal."""

from __future__ import annotations

import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from integration_harness import LocalCluster, wait_until
from test_dashboard import _browser, _js

from phalanx.cli import main
from phalanx.ops.regions import plan_regions


def _link(driver: Any) -> list[str]:
    return list(_js(driver, "const r = document.getElementById('link-dc1'); return r ? "
                            "[r.dataset.state, r.lastChild.textContent] : ['', ''];"))


def test_dashboard_shows_the_region_link_cut_and_healed() -> None:
    root = Path(tempfile.mkdtemp(prefix="phalanx-it-aa-dash-"))
    started: list[LocalCluster] = []
    driver = None
    try:
        plans = plan_regions(root, random.Random(), regions=2, prefixes="aa:",
                             strong_home="dc1",
                             overrides={"enable_fault_injection": True, "aa_poll_ms": 50},
                             base_ports=(20000, 40000 - 300))
        regions = {}
        for name, plan in plans.items():
            regions[name] = LocalCluster(plan=plan, root=root / name, name=name)
            started.append(regions[name])
        dc2 = regions["dc2"]
        viewer = dc2.node(dc2.leader())          # it leads the shard: it pulls from dc1
        regions["dc1"].client(regions["dc1"].nodes[0]).incr("aa:views")
        driver = _browser()
        driver.get(f"http://{viewer.admin}/")
        wait_until(lambda: _link(driver)[0] == "up", 30, "the page to show the dc1 link up")
        assert _js(driver, "return document.getElementById('links_section').hidden") is False
        for node in dc2.nodes:
            dc2.set_faults(node, {"drop_to": ["dc1"]})
        wait_until(lambda: _link(driver)[0] == "down", 30, "the page to show the link down")
        assert "drop_to" in _link(driver)[1]
        shown = CliRunner().invoke(main, ["status", "--data-dir", str(root / "dc2")])
        assert shown.exit_code == 0, shown.output
        assert "region links" in shown.output and "drop_to" in shown.output, shown.output
        for node in dc2.nodes:
            dc2.clear_faults(node)
        wait_until(lambda: _link(driver)[0] == "up", 30, "the page to show the link up again")
    finally:
        if driver is not None:
            driver.quit()
        for cluster in started:
            cluster.close()
        shutil.rmtree(root, ignore_errors=True)
