"""Local active-active setups: one phalanx cluster per region, linked (docs/active-active.md).

`plan_regions` plans R local clusters (`launcher.plan_local_cluster` each, on free loopback
addresses and ports, in `data_dir/<region>/`) whose nodes know their region (`aa_region`), the
active-active key prefixes (`aa_prefixes`), the other regions' RESP addresses (`aa_peers`) and
one shared link secret (`aa_secret`). Each cluster has its own name, so its peers refuse the
other regions' nodes at the handshake: regions share nothing but the region link.

Rules of this file: planning only (no process is started here; `launcher.start_local_cluster`
starts each region's plan).
"""

from __future__ import annotations

import random
import secrets
from pathlib import Path
from typing import Any

from phalanx.errors import ClusterError, ConfigError
from phalanx.ops.launcher import PlannedNode, check_addresses_free, plan_local_cluster

#: Region names of a local setup, in order.
REGION_NAMES = ("dc1", "dc2", "dc3", "dc4", "dc5")


def plan_regions(data_dir: str | Path, rng: random.Random, *, regions: int, prefixes: str,
                 nodes: int = 3, secret: str | None = None, strong_home: str = "",
                 overrides: dict[str, Any] | None = None,
                 base_ports: tuple[int, int] = (20000, 60000 - 300),
                 tries: int = 60) -> dict[str, list[PlannedNode]]:
    """Plans of `regions` linked local clusters of `nodes` nodes each (see the module
    docstring): region name -> its plan. `strong_home` (a region name, e.g. "dc1") makes that
    region the home of the strong keys (the others forward them there); empty: strong keys
    stay in each region. ClusterError when no free addresses were found."""
    if not 2 <= regions <= len(REGION_NAMES):
        raise ConfigError(f"regions: between 2 and {len(REGION_NAMES)} (got {regions})")
    if not prefixes.strip():
        raise ConfigError("active-active prefixes: at least one key prefix")
    names = REGION_NAMES[:regions]
    if strong_home and strong_home not in names:
        raise ConfigError(f"strong home: {strong_home!r} is not one of {', '.join(names)}")
    root = Path(data_dir).absolute()
    # 1) Free addresses for every region, on separate loopback ranges.
    layout: dict[str, tuple[int, int]] = {}
    for index, name in enumerate(names):
        for _ in range(tries):
            base_port = rng.randrange(*base_ports)
            loopback_base = 20 + index * 40 + rng.randrange(0, 40 - nodes)
            plan = plan_local_cluster(root / name, nodes=nodes, zones=min(3, nodes),
                                      base_port=base_port, loopback_base=loopback_base)
            try:
                check_addresses_free(plan)
            except ClusterError:
                continue
            layout[name] = (base_port, loopback_base)
            break
        else:
            raise ClusterError(f"no free ports / loopback addresses found for region {name}")
    addresses = {name: ",".join(node.config.me.resp for node in plan_local_cluster(
        root / name, nodes=nodes, zones=min(3, nodes), base_port=layout[name][0],
        loopback_base=layout[name][1])) for name in names}
    shared = secret if secret is not None else secrets.token_hex(16)
    # 2) The real plans, each region knowing the others.
    plans = {}
    for name in names:
        peers = ";".join(f"{other}={addresses[other]}" for other in names if other != name)
        options = {**(overrides or {}), "cluster": f"phalanx-{name}", "aa_region": name,
                   "aa_prefixes": prefixes, "aa_peers": peers, "aa_secret": shared,
                   "aa_strong_home": strong_home}
        plans[name] = plan_local_cluster(root / name, nodes=nodes, zones=min(3, nodes),
                                         region=name, base_port=layout[name][0],
                                         loopback_base=layout[name][1], overrides=options)
    return plans
