"""A CPU quota per benchmarked process, through a cgroup of its own: each collector
replica of `enoc bench scale --cpu-per-replica` runs as if on a small node of its own.

cgroup v2 (`cpu.max`, when /sys/fs/cgroup/cgroup.controllers lists `cpu`) or v1 (the
`cpu` controller's `cpu.cfs_quota_us`); either must be writable (root, or a delegated
subtree). The cgroup is made before the process starts, the process moved in right
after its spawn (its threads follow it), the quota set once it is ready, and the cgroup
removed after, whatever happened. Its `cpu.stat` (periods, throttled periods, time
throttled) says whether the quota was what bound the process.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 100_000  # the kernel's default CFS period
NEEDS = (
    "a CPU quota per replica needs a writable cgroup cpu controller: cgroup v2 at "
    "/sys/fs/cgroup with `cpu` in cgroup.controllers, or cgroup v1 at /sys/fs/cgroup/cpu "
    "(run as root, or in a cgroup delegated to this user)"
)


class CgroupError(RuntimeError):
    """No cgroup can limit the CPU here, or one could not be made or removed."""


@dataclass(frozen=True)
class Throttling:
    """A cgroup's `cpu.stat`: CFS periods it ran in, those it was throttled in, and the
    time its processes waited for the next period."""

    periods: int
    throttled_periods: int
    throttled_s: float

    def since(self, before: Throttling) -> Throttling:
        return Throttling(
            self.periods - before.periods,
            self.throttled_periods - before.throttled_periods,
            round(self.throttled_s - before.throttled_s, 3),
        )


@dataclass(frozen=True)
class Hierarchy:
    """Where CPU cgroups are made: the directory, and 1 or 2 (the cgroup version)."""

    parent: Path
    version: int


def hierarchy(root: Path = ROOT) -> Hierarchy:
    """The writable CPU hierarchy, or a CgroupError saying what is needed."""
    controllers = root / "cgroup.controllers"
    if controllers.exists():
        if "cpu" not in controllers.read_text().split():
            raise CgroupError(f"{NEEDS}; {controllers} does not list cpu")
        subtree = root / "cgroup.subtree_control"
        if "cpu" not in subtree.read_text().split():
            try:
                subtree.write_text("+cpu")
            except OSError as exc:
                raise CgroupError(f"{NEEDS}; cannot enable cpu in {subtree}: {exc}") from exc
        found = Hierarchy(root, 2)
    elif (root / "cpu" / "cpu.cfs_quota_us").exists():
        found = Hierarchy(root / "cpu", 1)
    else:
        raise CgroupError(f"{NEEDS}; neither is mounted at {root}")
    if not os.access(found.parent, os.W_OK):
        raise CgroupError(f"{NEEDS}; {found.parent} is not writable by this user")
    return found


class CpuQuota:
    """One cgroup limited to `cores` cores (0.25: a quarter of a core in every period)
    once `limit` is called; unlimited before (a process starts at full speed, as on a
    node of its own where it would not share its start with the others)."""

    def __init__(self, name: str, cores: float, where: Hierarchy) -> None:
        if not 0.01 <= cores <= 64:
            raise ValueError(f"a CPU quota from 0.01 to 64 cores, got {cores:g}")
        self.cores = cores
        self.where = where
        self.path = where.parent / f"enoc-bench-{os.getpid()}-{name}"
        try:
            self.path.mkdir()
        except OSError as exc:
            raise CgroupError(f"cannot make the cgroup {self.path}: {exc}") from exc

    def limit(self) -> None:
        """Hold the cgroup's processes to the quota from now on."""
        quota = round(self.cores * PERIOD_US)
        try:
            if self.where.version == 2:
                (self.path / "cpu.max").write_text(f"{quota} {PERIOD_US}")
            else:
                (self.path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
                (self.path / "cpu.cfs_quota_us").write_text(str(quota))
        except OSError as exc:
            raise CgroupError(f"cannot set the CPU quota of {self.path}: {exc}") from exc

    def add(self, pid: int) -> None:
        """Move a process (all its threads) into the cgroup."""
        try:
            (self.path / "cgroup.procs").write_text(str(pid))
        except OSError as exc:
            raise CgroupError(f"cannot move process {pid} into {self.path}: {exc}") from exc

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def throttling(self) -> Throttling:
        stat = {}
        for line in (self.path / "cpu.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            stat[key] = int(value)
        if self.where.version == 2:
            waited = stat.get("throttled_usec", 0) / 1e6
        else:
            waited = stat.get("throttled_time", 0) / 1e9
        return Throttling(stat.get("nr_periods", 0), stat.get("nr_throttled", 0), waited)

    def remove(self) -> None:
        """Remove the cgroup; a process still in it goes back to the parent first."""
        if not self.path.exists():
            return
        for _ in range(50):  # a process that just exited leaves its cgroup a moment later
            for pid in self.pids():
                with contextlib.suppress(OSError):  # gone meanwhile
                    (self.where.parent / "cgroup.procs").write_text(str(pid))
            try:
                self.path.rmdir()
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.05)
            else:
                return
        raise CgroupError(f"cannot remove the cgroup {self.path}: processes {self.pids()}")
