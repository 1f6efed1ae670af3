"""The live dashboard in a real headless Chromium (Debian's chromium + chromium-driver, driven
by Selenium): it draws the topology from the node's event stream and shows a leader kill."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from integration_harness import LocalCluster, wait_until

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def _browser() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert CHROMIUM and CHROMEDRIVER, (
        "the dashboard test needs Chromium and its driver: apt-get install chromium "
        "chromium-driver (.ci/run installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1400,1000"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def _js(driver: Any, script: str) -> Any:
    """Read the page in one script: the page redraws every 0.5 s, so element handles go stale."""
    return driver.execute_script(script)


def _shard_leader(driver: Any, shard: int) -> str:
    return str(_js(driver, f"const c = document.querySelector('#shard-{shard} td[data-leader]');"
                           f" return c ? c.dataset.leader : '';"))


def test_dashboard_shows_topology_and_a_leader_kill(cluster: Any, tmp_path: Path) -> None:
    """Proves: the page a node serves at its admin `/` renders every node (by zone) and every
    shard with its leader from the live event stream, and after kill -9 of shard 1's leader the
    same open page shows (within a bounded wait) a new leader for shard 1 and the killed node's
    card as unreachable. Saves a screenshot (PHALANX_DASHBOARD_SCREENSHOT=path keeps one)."""
    c: LocalCluster = cluster(3, shards=2)

    def shard_one_leader() -> str:
        status = c.status(c.nodes[0]) or {}
        return str(next(s for s in status["shards"] if s["id"] == 1)["leader"] or "")

    # The leadership balancer may move shard 1 right after startup (a TimeoutNow a second or two
    # in): wait until one leader has held it for 3 s before choosing the viewer and the victim.
    held: dict[str, Any] = {"leader": "", "since": 0.0}

    def settled() -> str:
        leader = shard_one_leader()
        if not leader or held["leader"] != leader:
            held.update(leader=leader, since=time.monotonic())
            return ""
        return leader if time.monotonic() - held["since"] >= 3.0 else ""

    leader_id = wait_until(settled, 30, "one leader to hold shard 1 for 3 s")
    viewer = next(n for n in c.nodes if n.id != leader_id)
    writer = c.client(viewer)
    for i in range(50):
        writer.set(f"dash:{i}", str(i))
    driver = _browser()
    try:
        driver.get(f"http://{viewer.admin}/")
        wait_until(lambda: _js(driver, "return document.querySelectorAll('.node').length") == 3,
                   20, "the dashboard to draw the three nodes")
        wait_until(lambda: _shard_leader(driver, 1) == leader_id, 20,
                   f"the dashboard to show {leader_id} leading shard 1")
        assert _js(driver, "return document.getElementById('conn').textContent") == "live"
        zones = set(_js(driver, "return [...document.querySelectorAll('.zone > .label')]"
                                ".map(e => e.textContent)"))
        assert zones == {"zone z1", "zone z2", "zone z3"}, zones
        stars = _js(driver, f"return [...document.querySelectorAll('#node-{leader_id} "
                            f".chip.leader')].map(e => e.textContent)")
        assert any("shard 1" in star for star in stars), stars
        killed_at = time.monotonic()
        c.kill(leader_id)
        new_leader = wait_until(
            lambda: (leader := _shard_leader(driver, 1)) not in ("", leader_id) and leader,
            30, "the dashboard to show a new leader of shard 1")
        shown_after = time.monotonic() - killed_at
        wait_until(lambda: _js(driver, f"const n = document.getElementById('node-{leader_id}');"
                                       f" return n ? n.dataset.state : '';")
                   in ("unreachable", "dead"), 30, f"the dashboard to show {leader_id} as down")
        print(f"dashboard: shard 1 leader {leader_id} killed; the page showed {new_leader} "
              f"{shown_after:.2f} s later")
        events = _js(driver, "return document.getElementById('events').textContent")
        assert events, "the events list is empty"
        shot = Path(os.environ.get("PHALANX_DASHBOARD_SCREENSHOT") or tmp_path / "dash.png")
        assert driver.save_screenshot(str(shot)), "Chromium took no screenshot"
        assert shot.stat().st_size > 10_000
    finally:
        driver.quit()
