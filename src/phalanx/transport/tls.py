"""Mutual TLS for the peer (Raft) transport: the contexts, their reload, the peer's name check.

Both sides of a peer connection present a certificate signed by the cluster's CA and verify
the other's (`CERT_REQUIRED` both ways, TLS 1.2 at least). A node's certificate must name its
node id (a DNS subjectAltName, or the common name): the dialer checks the acceptor's against
the peer id it dials (`server_hostname`), the acceptor checks the dialer's against the node id
its handshake claims (`check_peer_name`), so one node's certificate cannot speak for another.

Rules of this file:
- `PeerTls` builds new contexts when a file's modification time (or size) changed, checked at
  most once per `RELOAD_CHECK_INTERVAL_S` and on `reload()` (SIGHUP): new connections use the
  new certificate, established ones keep theirs. A reload that fails (a half-written file)
  keeps the previous contexts and logs why; the first load raises `ConfigError`.
- No IO but reading the three files; the caller owns the sockets.
"""

from __future__ import annotations

import logging
import os
import ssl
import time
from pathlib import Path
from typing import Any, Final

from phalanx.errors import ConfigError, PeerProtocolError

__all__ = ["RELOAD_CHECK_INTERVAL_S", "PeerTls", "check_peer_name", "load_contexts"]

logger = logging.getLogger(__name__)

#: How often (at most) the certificate files are checked for a change.
RELOAD_CHECK_INTERVAL_S: Final = 1.0


def load_contexts(cert_file: str, key_file: str, ca_file: str
                  ) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context) for mutual TLS; ConfigError naming the bad file."""
    contexts = []
    for purpose in (ssl.Purpose.CLIENT_AUTH, ssl.Purpose.SERVER_AUTH):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if purpose is ssl.Purpose.CLIENT_AUTH
                                 else ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.verify_mode = ssl.CERT_REQUIRED
        try:
            context.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as error:
            raise ConfigError(f"peer_tls_cert_file/peer_tls_key_file: cannot load "
                              f"{cert_file} with {key_file}: {error}") from error
        try:
            context.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as error:
            raise ConfigError(f"peer_tls_ca_file: cannot load {ca_file}: {error}") from error
        if purpose is ssl.Purpose.SERVER_AUTH:
            context.check_hostname = True  # the acceptor's certificate must name the peer id
        contexts.append(context)
    return contexts[0], contexts[1]


def _names(certificate: dict[str, Any]) -> set[str]:
    names = {value for kind, value in certificate.get("subjectAltName", ()) if kind == "DNS"}
    for rdn in certificate.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                names.add(value)
    return names


def check_peer_name(certificate: object, node_id: str) -> None:
    """Raise PeerProtocolError unless the verified peer `certificate` (`getpeercert()`) names
    `node_id` (a DNS subjectAltName or the common name)."""
    if not isinstance(certificate, dict) or not certificate:
        raise PeerProtocolError(f"peer {node_id!r} presented no certificate")
    names = _names(certificate)
    if node_id not in names:
        raise PeerProtocolError(f"the certificate of peer {node_id!r} names "
                                f"{', '.join(sorted(names)) or 'nobody'}, not {node_id!r}")


class PeerTls:
    """The peer transport's TLS contexts, reloaded when the files change (see the rules)."""

    def __init__(self, cert_file: str, key_file: str, ca_file: str) -> None:
        self.files = (cert_file, key_file, ca_file)
        self._stamp = self._stamps()
        self._server, self._client = load_contexts(*self.files)
        self._checked = time.monotonic()
        self.reloads = 0
        self.last_error: str | None = None

    def _stamps(self) -> tuple[tuple[int, int], ...]:
        stamps = []
        for name in self.files:
            try:
                stat = os.stat(name)
            except OSError:
                stamps.append((-1, -1))
            else:
                stamps.append((stat.st_mtime_ns, stat.st_size))
        return tuple(stamps)

    def reload(self, *, force: bool = True) -> bool:
        """Load the files again (when `force`, or when they changed); True if new contexts
        are in use. A failure keeps the current ones (logged, in `last_error`)."""
        self._checked = time.monotonic()
        stamp = self._stamps()
        if not force and stamp == self._stamp:
            return False
        try:
            server, client = load_contexts(*self.files)
        except ConfigError as error:
            self.last_error = str(error)
            logger.error("peer TLS: keeping the current certificate: %s", error)
            self._stamp = stamp  # retry when the files change again (or on SIGHUP)
            return False
        self._server, self._client, self._stamp = server, client, stamp
        self.reloads += 1
        self.last_error = None
        logger.warning("peer TLS: loaded %s (reload %d): new connections use it",
                       Path(self.files[0]).name, self.reloads)
        return True

    def _maybe_reload(self) -> None:
        if time.monotonic() - self._checked >= RELOAD_CHECK_INTERVAL_S:
            self.reload(force=False)

    def server_context(self) -> ssl.SSLContext:
        """The context of the next accepted connection."""
        self._maybe_reload()
        return self._server

    def client_context(self) -> ssl.SSLContext:
        """The context of the next outbound connection."""
        self._maybe_reload()
        return self._client
