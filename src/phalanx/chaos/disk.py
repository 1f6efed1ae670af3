"""Disk faults for the chaos lab, for real: bytes flipped in a stopped node's files
(`disk-corrupt`), a small real file system filled up under one replica (`disk-full`), and the
store's own injected EIO (`disk-error`, through the node's admin API: see `DISK_ERROR_NOTE`).

Rules of this file:
- Only a STOPPED node's files are touched (the nemesis kills it first): a disk that returned
  bad data is seen when the node reads its store again at restart.
- `corrupt_store` picks, from its own `random.Random`, one data shard's replica of the node
  (`groups/<id>/`, never the placement driver's group 0) and flips one byte either in the
  middle of the records of a WAL segment (valid records follow it, so the store cannot take it
  for the torn tail of a crash: `storage/wal.py` must call it `Corrupt`) or in the middle of
  the payload of the newest snapshot file (its CRC32 must catch it). A replica whose log lives
  in the node log (`storage/nodelog.py`) has a byte flipped in the payload of a frame of the
  node log that holds that replica's ops only (never the last frame: valid frames follow it).
  It returns what it did.
- `SmallDisks` mounts a tmpfs with `size=` (a real file system with a real limit: writes past
  it fail with ENOSPC in the kernel) beside ONE data replica of a STOPPED node
  (`<data_dir>/small-disk-<id>/`), copies the replica's files into its `replica/` directory
  and bind-mounts that over `groups/<id>/`; `fill` then writes a ballast file on that disk but
  OUTSIDE the replica's directory until the kernel says ENOSPC (a node deleting its damaged
  replica does not free the disk: the fault is the disk, not the replica's files), `free`
  deletes the ballast (space returns), `unmount_all` undoes every mount (after the nodes were
  stopped). Mounting needs root (CI runs as root); without it,
  `DiskFaultError` says so. A store in the node's one log (`storage_engine = "node"`) has no
  directory of its own: refused with `DiskFaultError`.
- Standard library and the node log's format module only; no import of `server` (the lab
  sees the system from outside).
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import shutil
import struct
import subprocess
from pathlib import Path

from phalanx.storage import nodelog_format

#: The WAL segment header (magic + seq), before the first record (storage/wal.py).
_WAL_HEADER_BYTES = 16
#: The snapshot file header: magic, term, index, length, crc32 (storage/sqlite.py).
_SNAPSHOT_HEADER = struct.Struct(">8sQQQI")


class DiskFaultError(Exception):
    """The node has nothing to corrupt (no data shard replica on disk)."""


def _snapshot_index(path: Path) -> int:
    try:
        return int(_SNAPSHOT_HEADER.unpack_from(path.read_bytes())[2])
    except (OSError, struct.error):
        return -1


def corrupt_store(data_dir: str | Path, rng: random.Random, *, kind: str = "any") -> str:
    """Flip one byte of one data replica's WAL segment or snapshot file (see the rules);
    `kind` is "wal", "snapshot" or "any" (snapshot when one exists, half of the time)."""
    groups = Path(data_dir) / "groups"
    candidates = sorted((p for p in groups.glob("*") if p.is_dir() and p.name.isdigit()
                         and p.name != "0" and (any(p.glob("*.wal"))
                                                or (p / "NODELOG").exists())),
                        key=lambda p: int(p.name))
    if not candidates:
        raise DiskFaultError(f"no data shard replica under {groups}")
    group = rng.choice(candidates)
    snapshots = sorted(group.glob("snapshot-*.snap"), key=_snapshot_index)
    use_snapshot = kind == "snapshot" or (kind == "any" and snapshots and rng.random() < 0.5)
    if use_snapshot:
        if not snapshots:
            raise DiskFaultError(f"no snapshot file in {group}")
        path = snapshots[-1]
        data = bytearray(path.read_bytes())
        start = _SNAPSHOT_HEADER.size
        end = len(data)
    elif (group / "NODELOG").exists():
        return _corrupt_node_log(Path(data_dir), group)
    else:
        path = sorted(group.glob("*.wal"))[0]
        data = bytearray(path.read_bytes())
        start = _WAL_HEADER_BYTES
        end = len(data.rstrip(b"\0"))
    if end - start < 2:
        raise DiskFaultError(f"{path} holds nothing to corrupt")
    position = start + (end - start) // 2
    data[position] ^= 0xFF
    path.write_bytes(bytes(data))
    return f"shard {group.name}: byte {position} of {path.name} flipped"


def _corrupt_node_log(data_dir: Path, group: Path) -> str:
    """Flip a byte in the middle of the payload of the middle frame that holds only this
    group's ops (and is not the log's last frame)."""
    key = int((group / "NODELOG").read_text().strip(), 16)
    found: list[tuple[Path, int, int]] = []  # (segment, payload start, payload end)
    for path in sorted((data_dir / "log").glob("*.log")):
        data = path.read_bytes()
        scan = nodelog_format.scan_segment(str(path), data, int(path.stem, 16), last=False)
        for frame in scan.frames:
            if not frame.problem and frame.keys == (key,) and frame.payload:
                found.append((path, frame.end - len(frame.payload), frame.end))
    if len(found) < 2:
        raise DiskFaultError(f"no frame of the node log holds only shard {group.name}'s ops")
    path, start, end = found[(len(found) - 1) // 2]
    position = start + (end - start) // 2
    with open(path, "r+b") as file:  # in place: a running node may be appending
        file.seek(position)
        byte = file.read(1)
        file.seek(position)
        file.write(bytes([byte[0] ^ 0xFF]))
    return f"shard {group.name}: byte {position} of node log segment {path.name} flipped"


#: What `disk-error` runs, in words (the report and the docs say which kind of fault ran).
DISK_ERROR_NOTE = ("the store's own fault injection (PUT /faults/disk: every read and write of "
                   "the replica's store fails with EIO); this kernel has no device-mapper "
                   "error/flakey target and no make-it-fail on its block devices")
#: Room on a small disk beyond the replica's files: a WAL preallocation chunk (4 MiB) and a
#: few snapshots; the ballast takes it all.
SMALL_DISK_SPARE_BYTES = 8 << 20
_BALLAST = "ballast.fill"


def arm_disk_error(admin_address: str, shard: int, error: str = "EIO", *,
                   token: str = "") -> str:
    """Arm the store's own disk fault on a RUNNING node's replica of `shard` (admin `PUT
    /faults/disk`, fault injection on): its reads and writes fail with `error`."""
    from phalanx.ops.admin import admin_request

    code, body = admin_request(admin_address, "/faults/disk", method="PUT",
                               body={"shard": shard, "error": error}, token=token,
                               timeout=5.0)
    if code != 200:
        raise DiskFaultError(f"PUT /faults/disk on {admin_address}: {code} {body}")
    return f"every read and write of its replica of shard {shard} fails with {error} (injected)"


def clear_disk_errors(admin_address: str, *, token: str = "") -> None:
    """Disarm every injected disk fault of a node (the disk was replaced)."""
    from phalanx.ops.admin import admin_request

    code, body = admin_request(admin_address, "/faults/disk", method="DELETE", token=token,
                               timeout=5.0)
    if code != 200:
        raise DiskFaultError(f"DELETE /faults/disk on {admin_address}: {code} {body}")


def _replica_dirs(data_dir: str | Path) -> list[Path]:
    groups = Path(data_dir) / "groups"
    return sorted((p for p in groups.glob("*") if p.is_dir() and p.name.isdigit()
                   and p.name != "0"), key=lambda p: int(p.name))


class SmallDisks:
    """The small file systems the lab mounted (see the rules): replica directory -> its size."""

    def __init__(self) -> None:
        self.mounted: dict[Path, int] = {}
        #: replica directory -> the small disk (the tmpfs's mount point) it lives on.
        self.disks: dict[Path, Path] = {}

    def mount(self, data_dir: str | Path, rng: random.Random,
              spare_bytes: int = SMALL_DISK_SPARE_BYTES) -> str:
        """Put one data replica of the STOPPED node at `data_dir` on its own small tmpfs: the
        tmpfs is mounted at `<data_dir>/small-disk-<id>/` (the disk), the replica's files are
        copied into its `replica/` directory, which is bind-mounted over `groups/<id>/`. The
        ballast of `fill` goes on the same disk but outside the replica's directory, so a node
        that deletes its damaged replica (to rebuild it) does not delete the ballast: the disk
        stays full until `free`, as a full disk would."""
        if os.geteuid() != 0 or shutil.which("mount") is None:
            raise DiskFaultError("disk-full mounts a small tmpfs: it needs root and mount(8)")
        candidates = [p for p in _replica_dirs(data_dir) if p not in self.mounted
                      and (any(p.glob("*.wal")) or any(p.glob("*.db")))]
        if not candidates:
            raise DiskFaultError(f"no data shard replica with its own files under {data_dir} "
                                 "(a store in the node's one log has no directory to mount)")
        group = rng.choice(candidates)
        # The copy writes every byte (a preallocated WAL tail included): count sizes, not the
        # blocks a sparse file happens to use.
        files = [p for p in group.iterdir() if p.is_file()]
        used = sum(max(p.stat().st_size, p.stat().st_blocks * 512) + 4096 for p in files)
        size = used + spare_bytes
        disk = Path(data_dir) / f"small-disk-{group.name}"
        disk.mkdir(exist_ok=True)
        _mount(["-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)], f"a tmpfs on {disk}")
        home = disk / "replica"
        try:
            home.mkdir()
            for child in files:
                shutil.copy2(child, home / child.name)
        except OSError as error:
            # Nothing of the replica was touched yet: drop the small disk, the replica stays.
            _umount(disk)
            raise DiskFaultError(f"cannot copy {group.name}'s replica onto a {size}-byte "
                                 f"tmpfs: {error}") from error
        try:
            _mount(["--bind", str(home), str(group)], f"{home} over {group}")
        except DiskFaultError:
            _umount(disk)
            raise
        self.mounted[group] = size
        self.disks[group] = disk
        return f"shard {group.name}'s replica on a {size >> 10} KiB tmpfs"

    def _disks_of(self, data_dir: str | Path) -> list[Path]:
        return [self.disks[m] for m in self.mounted if Path(data_dir) in m.parents]

    def fill(self, data_dir: str | Path) -> str:
        """Write a ballast file on the node's small disk (beside its replica's directory, not
        in it) until the kernel refuses (ENOSPC)."""
        disks = self._disks_of(data_dir)
        if not disks:
            raise DiskFaultError(f"no small disk mounted under {data_dir}")
        group = next(m for m in self.mounted if self.disks[m] == disks[0])
        written = 0
        block = b"\xa5" * (64 << 10)
        # Unbuffered: a write the kernel refuses leaves nothing behind for close() to retry.
        with open(disks[0] / _BALLAST, "ab", buffering=0) as ballast:
            try:
                while written < self.mounted[group]:
                    count = ballast.write(block)
                    if not count:
                        break
                    written += count
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise
        free = shutil.disk_usage(disks[0]).free
        return f"shard {group.name}'s disk filled ({written >> 10} KiB of ballast, " \
               f"{free} bytes free)"

    def free(self, data_dir: str | Path) -> str:
        """Delete the ballast: space returns."""
        freed = 0
        for disk in self._disks_of(data_dir):
            ballast = disk / _BALLAST
            if ballast.exists():
                freed += ballast.stat().st_size
                ballast.unlink()
        return f"{freed >> 10} KiB freed"

    def unmount_all(self) -> list[str]:
        """Unmount every small disk (lazily: call it once the nodes are stopped): the bind
        mount over the replica's directory, then the tmpfs itself."""
        done = []
        for mount in list(self.mounted):
            _umount(mount)
            disk = self.disks.pop(mount, None)
            if disk is not None:
                _umount(disk)
                with contextlib.suppress(OSError):
                    disk.rmdir()
            del self.mounted[mount]
            done.append(f"{mount} unmounted")
        return done


def _mount(arguments: list[str], what: str) -> None:
    completed = subprocess.run(["mount", *arguments], capture_output=True, text=True,
                               timeout=30, check=False)
    if completed.returncode != 0:
        raise DiskFaultError(f"cannot mount {what}: "
                             f"{completed.stderr.strip() or completed.returncode}")


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30, check=False)


__all__ = ["DISK_ERROR_NOTE", "DiskFaultError", "SmallDisks", "arm_disk_error", "clear_disk_errors",
           "corrupt_store"]
