"""The HAProxy of the chaos lab's `--client haproxy` mode: started in front of the run's cluster
with the config phalanx generates (`phalanx.ops.haproxy.render_config`, the code behind
`phalanx haproxy-config`), stopped at the end of the run.

Rules of this file:
- The real `haproxy` binary (PATH, else /usr/sbin/haproxy); a ChaosError in one line when it
  is missing or its config does not pass `haproxy -c`.
- A free port on the loopback (bound and released just before HAProxy binds it); a stats
  socket for `show stat`. Ready when every server of the balanced backend is UP (bounded).
- `stop()` SIGTERMs its own process (by pid, its own session), then SIGKILLs it if it lingers,
  and removes its temporary directory. The pid is exposed (`pid`) for the run's pid file.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from phalanx.chaos.control import NodeInfo
from phalanx.errors import ChaosError, ConfigError
from phalanx.ops.haproxy import BackendNode, render_config, server_statuses
from phalanx.ops.ports import free_port as _free_port

#: How long HAProxy may take to see every server UP.
READY_TIMEOUT_S = 30.0


def haproxy_binary() -> str | None:
    found = shutil.which("haproxy")
    if found is None and Path("/usr/sbin/haproxy").exists():
        found = "/usr/sbin/haproxy"
    return found




def backend_nodes(nodes: Sequence[NodeInfo]) -> list[BackendNode]:
    """The cluster's nodes as `render_config` wants them (admin address from the admin URL)."""
    found = []
    for node in nodes:
        admin = node.admin_url.split("://", 1)[-1].rstrip("/")
        found.append(BackendNode(id=node.id, resp=f"{node.resp_host}:{node.resp_port}",
                                 admin=admin, zone=node.zone))
    return found


class LabHAProxy:
    """One HAProxy process in front of `nodes` (see the module docstring)."""

    def __init__(self, nodes: Sequence[NodeInfo], *, host: str = "127.0.0.1") -> None:
        binary = haproxy_binary()
        if binary is None:
            raise ChaosError("--client haproxy needs the haproxy binary (apt-get install "
                             "haproxy)")
        self.binary = binary
        self.host = host
        self.nodes = list(nodes)
        # A short directory: a unix socket path must stay under ~108 bytes.
        self.directory = Path(tempfile.mkdtemp(prefix="phx-lab-hap-"))
        self.socket_path = self.directory / "stats.sock"
        self.config_path = self.directory / "haproxy.cfg"
        self.log_path = self.directory / "haproxy.log"
        self.port = _free_port(host)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def start(self, timeout_s: float = READY_TIMEOUT_S,
              on_spawn: Callable[[int], None] | None = None) -> LabHAProxy:
        config = render_config(backend_nodes(self.nodes), frontend_port=self.port,
                               bind_address=self.host, stats_socket=self.socket_path)
        self.config_path.write_text(config)
        checked = subprocess.run([self.binary, "-c", "-f", str(self.config_path)],
                                 capture_output=True, text=True, timeout=30,
                                 stdin=subprocess.DEVNULL, check=False)
        if checked.returncode != 0:
            raise ChaosError(f"haproxy -c refused the generated config: "
                             f"{(checked.stdout + checked.stderr).strip()[-500:]}")
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen([self.binary, "-f", str(self.config_path), "-db"],
                                            stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        if on_spawn is not None:
            on_spawn(self.process.pid)
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                raise ChaosError(f"haproxy exited ({self.process.returncode}): {self.log()}")
            try:
                statuses = server_statuses(self.socket_path)
            except (OSError, ValueError, ConfigError):
                statuses = {}
            if len(statuses) == len(self.nodes) and all(s == "UP" for s in statuses.values()):
                return self
            if time.monotonic() >= deadline:
                self.stop()
                raise ChaosError(f"HAProxy did not see every node UP within {timeout_s:g} s: "
                                 f"{statuses}")
            time.sleep(0.1)

    def statuses(self) -> dict[str, str]:
        return server_statuses(self.socket_path)

    def stop(self) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                process.wait(timeout=5)
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> LabHAProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
