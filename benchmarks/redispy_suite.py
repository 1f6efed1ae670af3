"""phalanx against redis-py's OWN test suite, side by side with a real redis-server (issue 13).

What it does (see benchmarks/README.md, "redis-py's test suite"):
- Fetches redis-py's source distribution for the version pinned in pyproject.toml
  (`pip download --no-deps --no-binary :all: redis==X` into a cache directory, default
  ~/.cache/phalanx/redispy) and unpacks it there; the sdist carries redis-py's `tests/`.
- Starts one `redis-server` (in memory: `--save '' --appendonly no`, a free loopback port) and a
  3-node phalanx cluster through `phalanx.ops.launcher` (free ports and loopback addresses, the
  node defaults), and runs `pytest` on redis-py's `tests/test_commands.py`, `test_pipeline.py`,
  `test_lock.py`, `test_pubsub.py` and `test_scripting.py` (or `--files`) with
  `--redis-url=redis://HOST:PORT` against each: redis-py's own pytest config (from its sdist's
  pyproject), `-p no:cacheprovider`, a per-test timeout, no `-x`, junit XML.
  phalanx is reached through its shard leader's RESP port (any node would proxy; the leader
  saves a hop).
- redis-py's conftest reads `INFO` once (redis_version, arch_bits, cluster_enabled) and aborts
  the whole run when a field is missing. Such an abort is a result and is reported first. With
  `--info-shim auto` (default) the run against that target is then repeated with
  `benchmarks/redispy/info_shim.py`, which fills only the missing fields during the conftest's
  session start (the tests see the server's real INFO); the report names the fields supplied.
  `--info-shim off` stops at the abort.
- Writes `RESULTS.md` and `results.json` to `--output` (default benchmarks/redispy/), plus the
  raw junit XML and pytest logs under `OUTPUT/raw/` (not committed), and prints the Markdown.

Rules it keeps: every process it starts is stopped by pid at the end, also on error, Ctrl-C and
SIGTERM; redis-py's tests are never modified; phalanx's code is not touched.

Run it with the project's venv:
    .venv/bin/python benchmarks/redispy_suite.py [--files test_lock.py ...] [--output DIR]
(`packaging`, which redis-py's conftest imports, is in the dev extra); or `make redispy`.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from pathlib import Path

from phalanx.ops.ports import free_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE / "redispy"))

from redispy_report import RunResult, compare, markdown, parse_junit  # noqa: E402

DEFAULT_FILES = ["test_commands.py", "test_pipeline.py", "test_lock.py", "test_pubsub.py",
                 "test_scripting.py"]
REDIS_SERVER = "/usr/bin/redis-server"


def log(message: str) -> None:
    print(f"[redispy {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the sdist


def pinned_redis_version() -> str:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for requirement in data["project"]["dependencies"]:
        match = re.fullmatch(r"redis==([\w.]+)", requirement.strip())
        if match:
            return match.group(1)
    raise SystemExit("pyproject.toml pins no redis==X")


def default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "phalanx" / "redispy"


def fetch_sdist(version: str, cache: Path) -> Path:
    """The unpacked sdist directory of redis==version (downloaded once into `cache`)."""
    cache.mkdir(parents=True, exist_ok=True)
    unpacked = cache / f"redis-{version}"
    if (unpacked / "tests" / "conftest.py").exists():
        return unpacked
    archive = cache / f"redis-{version}.tar.gz"
    if not archive.exists():
        log(f"downloading redis=={version} sdist into {cache}")
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--no-binary", ":all:", f"redis=={version}", "-d", str(cache)],
                       check=True, timeout=300)
    staging = Path(tempfile.mkdtemp(prefix="unpack-", dir=cache))
    try:  # unpack aside, then rename: a concurrent run never sees half a tree
        with tarfile.open(archive) as tar:
            tar.extractall(staging, filter="data")
        with contextlib.suppress(OSError):  # another run renamed its copy first
            (staging / unpacked.name).rename(unpacked)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not (unpacked / "tests" / "conftest.py").exists():
        raise SystemExit(f"{archive} holds no tests/conftest.py")
    return unpacked


# --------------------------------------------------------------------------- servers




def wait_ping(host: str, port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), \
                socket.create_connection((host, port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            if sock.recv(64).startswith(b"+PONG"):
                return
        time.sleep(0.1)
    raise RuntimeError(f"{host}:{port} did not answer PING in {timeout} s")


class Servers:
    """The redis-server and the phalanx cluster; `stop()` stops both by pid (idempotent)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.redis: subprocess.Popen[bytes] | None = None
        self.phalanx: dict[str, subprocess.Popen[bytes]] = {}

    def start_redis(self) -> str:
        port = free_port()
        rdir = self.workdir / "redis-server"
        rdir.mkdir()
        with open(rdir / "redis.log", "ab") as out:
            self.redis = subprocess.Popen(
                [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(rdir)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        wait_ping("127.0.0.1", port)
        version = subprocess.run([REDIS_SERVER, "--version"], capture_output=True, text=True,
                                 timeout=10).stdout.strip()
        log(f"redis-server pid {self.redis.pid} on 127.0.0.1:{port} ({version})")
        return f"redis://127.0.0.1:{port}"

    def start_phalanx(self) -> str:
        from phalanx.ops import launcher

        data_dir = self.workdir / "phalanx"
        plan = launcher.pick_free_plan(data_dir, random.Random(), nodes=3)
        cluster, leader, self.phalanx = launcher.start_local_cluster(data_dir, plan, timeout=60)
        entry = next(e for e in cluster.nodes if e.id == leader)
        log(f"phalanx 3 nodes, pids {[p.pid for p in self.phalanx.values()]}, "
            f"leader {leader} at {entry.resp}")
        return f"redis://{entry.resp}"

    def stop(self) -> None:
        if self.phalanx:
            from phalanx.ops import launcher

            launcher.stop_processes(self.phalanx.values())
            log("phalanx stopped")
            self.phalanx = {}
        if self.redis is not None:
            if self.redis.poll() is None:
                self.redis.terminate()
                try:
                    self.redis.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.redis.kill()
                    self.redis.wait()
            log("redis-server stopped")
            self.redis = None


# --------------------------------------------------------------------------- pytest


def abort_reason(log_text: str, returncode: int) -> str:
    """Why a pytest run produced no results, in one line, from its output."""
    key = re.findall(r"KeyError: '([^']+)'", log_text)
    if key and "sessionstart" in log_text:
        return (f"redis-py's conftest aborted the whole run (pytest exit {returncode}): "
                f"the server's INFO lacks the field `{key[-1]}` "
                f"(`KeyError: '{key[-1]}'` in `pytest_sessionstart`)")
    interesting = [line for line in log_text.splitlines()
                   if re.search(r"Error|error:|INTERNALERROR> E", line)]
    last = (interesting or log_text.strip().splitlines() or ["(no output)"])[-1].strip()
    return f"pytest exit {returncode} with no results: {last}"


def run_suite(target: str, url: str, sdist: Path, files: list[str], raw: Path,
              args: argparse.Namespace, shim: bool = False) -> RunResult:
    label = target + ("-shim" if shim else "")
    junit = raw / f"{label}.xml"
    log_path = raw / f"{label}.log"
    shim_out = raw / f"{label}.shim.json"
    for stale in (junit, shim_out):
        stale.unlink(missing_ok=True)
    # `-o addopts=` drops redis-py's `-s`; `--tb=native`: pytest's own traceback rendering
    # re-parses redis-py's large modules for every frame (~2.6 s per failed test here).
    command = [sys.executable, "-m", "pytest", *[f"tests/{f}" for f in files],
               "-c", str(sdist / "pyproject.toml"), "--rootdir", str(sdist),
               f"--redis-url={url}", f"--redis-mod-url={url}", "-p", "no:cacheprovider",
               f"--timeout={args.timeout}", f"--junitxml={junit}", "-q", "-o", "addopts=",
               "--tb=native"]
    if args.protocol:
        command.append(f"--protocol={args.protocol}")
    keyword = getattr(args, "keyword", None)  # (callers may pass their own namespace)
    if keyword:
        command += ["-k", keyword]
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if shim:
        command += ["-p", "info_shim"]
        env["PYTHONPATH"] = str(HERE / "redispy")
        env["PHALANX_REDISPY_SHIM_OUT"] = str(shim_out)
    log(f"pytest {len(files)} file(s) against {label} ({url}); log {log_path}")
    started = time.monotonic()
    with open(log_path, "wb") as out:
        process = subprocess.Popen(command, cwd=sdist, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        try:
            returncode = process.wait(timeout=args.run_timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            returncode = process.wait()
            log(f"{label}: killed after {args.run_timeout} s")
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise
    run = RunResult(target=label, returncode=returncode,
                    seconds=round(time.monotonic() - started, 1))
    if junit.exists():
        with contextlib.suppress(Exception):
            run.tests = parse_junit(junit)
    if not run.tests:
        run.aborted = abort_reason(log_path.read_text(errors="replace"), returncode)
    if shim_out.exists():
        run.shim_fields = json.loads(shim_out.read_text())
    log(f"{label}: exit {returncode}, {len(run.tests)} tests in {run.seconds} s"
        + (f"; ABORTED: {run.aborted}" if run.aborted else ""))
    return run


# --------------------------------------------------------------------------- main


def git_head() -> str:
    with contextlib.suppress(Exception):
        # the last commit that changed phalanx itself (src/), not this runner's commits
        out = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%h %s", "--",
                              "src"], capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "src"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out + (" (+ uncommitted changes in src/)" if dirty else "")
    return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", nargs="+", default=DEFAULT_FILES,
                        help="redis-py test files (default: %(default)s)")
    parser.add_argument("-k", "--keyword", default=None,
                        help="pytest -k expression: run only the matching tests (to iterate "
                             "on a subset; never for the committed RESULTS.md)")
    parser.add_argument("--output", type=Path, default=HERE / "redispy")
    parser.add_argument("--cache", type=Path, default=default_cache())
    parser.add_argument("--protocol", choices=["2", "3"], default=None,
                        help="passed to redis-py's conftest --protocol (default: its default)")
    parser.add_argument("--timeout", type=int, default=30, help="per-test timeout, seconds")
    parser.add_argument("--run-timeout", type=int, default=3600,
                        help="kill a whole pytest run after this many seconds")
    parser.add_argument("--targets", nargs="+", choices=["redis-server", "phalanx"],
                        default=["redis-server", "phalanx"])
    parser.add_argument("--info-shim", choices=["auto", "off", "on"], default="auto",
                        help="fill INFO fields the conftest needs: auto = only after an abort")
    args = parser.parse_args(argv)
    files = [Path(f).name for f in args.files]

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    version = pinned_redis_version()
    sdist = fetch_sdist(version, args.cache)
    missing = [f for f in files if not (sdist / "tests" / f).exists()]
    if missing:
        raise SystemExit(f"not in redis-py {version}'s tests/: {', '.join(missing)}")
    output: Path = args.output
    raw = output / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    runs: dict[str, RunResult] = {}
    aborts: dict[str, RunResult] = {}
    workdir = Path(tempfile.mkdtemp(prefix="phalanx-redispy-"))
    servers = Servers(workdir)
    try:
        for target in args.targets:
            url = servers.start_redis() if target == "redis-server" else servers.start_phalanx()
            run = run_suite(target, url, sdist, files, raw, args, shim=args.info_shim == "on")
            if run.aborted and args.info_shim == "auto" and "lacks the field" in run.aborted:
                aborts[target] = run
                run = run_suite(target, url, sdist, files, raw, args, shim=True)
            elif run.aborted:
                aborts[target] = run
            runs[target] = run
            servers.stop()
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        servers.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    comparison = None
    measured = {t: r for t, r in runs.items() if not r.aborted}
    if "redis-server" in measured and "phalanx" in measured:
        comparison = compare(measured["redis-server"], measured["phalanx"])
    today = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    protocol = args.protocol or "redis-py's default (RESP3 in redis-py 8)"
    header = [f"# redis-py {version}'s own tests: phalanx vs redis-server", "",
              f"Measured {today} on phalanx commit `{git_head()}`, by "
              "`benchmarks/redispy_suite.py` (see benchmarks/README.md).", "",
              f"- files: {', '.join(files)}"
              + (f" (only tests matching `-k {args.keyword}`)" if args.keyword else "")
              + f"; protocol: {protocol}; per-test timeout "
              f"{args.timeout} s; pytest with redis-py's own config (its sdist's pyproject)",
              "- redis-server: `/usr/bin/redis-server` (7.0), in memory, one process",
              "- phalanx: 3 nodes on one host through `phalanx.ops.launcher`, node defaults, "
              "1 shard; the suite talks to the shard leader's RESP port",
              "- columns: passed / failed / skipped / errors (setup or teardown errors)"]
    for target, run in runs.items():
        header.append(f"- {target}: pytest exit {run.returncode}, {len(run.tests)} tests, "
                      f"{run.seconds} s"
                      + (f"; **measured with the runner's INFO shim, which supplied "
                         f"{', '.join(f'`{f}`' for f in run.shim_fields)}** during the "
                         "conftest's session start only" if run.shim_fields else ""))
    header.append("")
    report = markdown(files, measured, comparison, header, aborts)
    (output / "RESULTS.md").write_text(report + "\n")
    payload = {
        "date": today, "commit": git_head(), "redis_py": version, "files": files,
        "keyword": args.keyword,
        "protocol": args.protocol, "timeout": args.timeout,
        "aborts": {t: r.aborted for t, r in aborts.items()},
        "runs": {t: {"returncode": r.returncode, "seconds": r.seconds,
                     "shim_fields": r.shim_fields, "per_file": r.counts(),
                     "aborted": r.aborted} for t, r in runs.items()},
        "comparison": None if comparison is None else {
            "redis_server_passed": comparison.reference_passed,
            "phalanx_passed_of_those": comparison.both_passed,
            "phalanx_only_passed": comparison.phalanx_only_passed,
            "causes": [{"cause": c, "tests": n, "examples": e}
                       for c, n, e in comparison.causes]},
        "outcomes": {t: {tid: res.outcome for tid, res in r.tests.items()}
                     for t, r in runs.items()},
    }
    (output / "results.json").write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")
    print(report)
    log(f"wrote {output / 'RESULTS.md'} and {output / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
