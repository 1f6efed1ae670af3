"""Strong keys in an active-active setup: one home region (docs/active-active.md).

With `aa_strong_home` set, the keys outside the active-active prefixes live in ONE region's
cluster (the home). A node of any other region forwards every command on a strong key to the
home region over a RESP link (its password, TLS when configured) and relays the reply, so
strong keys keep one linearizable history across regions. A region cut off from the home
refuses them with -CLUSTERDOWN, as a minority refuses today, while its active-active keys keep
working: the CAP choice per keyspace.

Rules of this file: every network await has a timeout; a command that was certainly not sent
is `LeaderUnreachable` then -CLUSTERDOWN (safe to retry), one that was sent when the link broke
is `OutcomeUnknown`; the lab's fault rules (`drop_to` the home region's name) cut the link.
"""

from __future__ import annotations

import asyncio
import ssl

from phalanx.errors import ClusterDown, LeaderUnreachable, OutcomeUnknown, PeerProtocolError
from phalanx.server.config import NodeConfig, parse_address
from phalanx.server.peer_link import LeaderLink
from phalanx.transport.faults import FaultRules

#: The name a home-region link carries there (CLIENT LIST): an ordinary client, routed as one.
HOME_LINK_CLIENT_NAME = b"phalanx-region-home"


class StrongHome:
    """Forwards strong-key commands to their home region (see the module docstring)."""

    def __init__(self, config: NodeConfig, tls: ssl.SSLContext | None,
                 fault_rules: FaultRules | None) -> None:
        self.home = config.aa_strong_home
        self.region = config.aa_region
        self.addresses = config.aa_peer_map()[self.home]
        self.password = config.aa_peer_password or config.requirepass
        self.timeout = config.request_timeout_ms / 1000
        self.tls = tls
        self.fault_rules = fault_rules
        self._link: LeaderLink | None = None
        self._next = 0

    def _refusal(self, why: str) -> ClusterDown:
        return ClusterDown(f"strong keys live in region {self.home}, which region "
                           f"{self.region} cannot reach ({why}); active-active keys keep "
                           f"working here")

    async def call(self, arguments: list[bytes]) -> object:
        """Run one command in the home region and return its reply."""
        if self.fault_rules is not None and self.home in self.fault_rules.drop_to:
            raise self._refusal("cut by the fault rules")
        last = ""
        for _ in range(len(self.addresses)):
            link = self._link
            if link is None:
                address = self.addresses[self._next % len(self.addresses)]
                host, port = parse_address(address, "aa_peers")
                link = self._link = LeaderLink(f"region {self.home} ({address})", host, port,
                                               self.timeout, self.password, self.tls,
                                               client_name=HOME_LINK_CLIENT_NAME)
            sent = asyncio.Event()
            try:
                return await link.call(arguments, sent)
            except LeaderUnreachable as error:
                last = str(error)
            except (OSError, TimeoutError, PeerProtocolError) as error:
                self._drop()
                if sent.is_set():
                    raise OutcomeUnknown(f"the link to region {self.home} failed while a "
                                         f"command was forwarded ({error}); a write may or "
                                         f"may not have been applied") from error
                last = str(error)
            self._drop()
        raise self._refusal(last or "no address answered")

    def _drop(self) -> None:
        if self._link is not None:
            self._link.close()
            self._link = None
        self._next += 1

    def close(self) -> None:
        if self._link is not None:
            self._link.close()
            self._link = None
