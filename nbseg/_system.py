"""What this process may use: CPU quota and memory limit (cgroup-aware, e.g. on Binder)."""

from __future__ import annotations

import os
from pathlib import Path


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def cpu_quota() -> int:
    """Number of CPUs this process may use: affinity, capped by a cgroup CPU quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    v2 = _read("/sys/fs/cgroup/cpu.max")
    if v2 and not v2.startswith("max"):
        quota, period = v2.split()[:2]
        n = min(n, max(1, int(int(quota) / int(period))))
    else:
        quota_us = _read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
        period_us = _read("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
        if quota_us and period_us and int(quota_us) > 0:
            n = min(n, max(1, int(quota_us) // int(period_us)))
    return max(1, n)


def memory_limit_bytes() -> int | None:
    """The cgroup memory limit, or None when there is none."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        text = _read(path)
        if text and text != "max":
            value = int(text)
            if value < 1 << 60:  # v1 reports a huge number for "no limit"
                return value
    return None


def _cgroup_usage_bytes() -> int | None:
    for path in ("/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/memory/memory.usage_in_bytes"):
        text = _read(path)
        if text:
            return int(text)
    return None


def available_memory_bytes() -> int:
    """Memory available to this process now: MemAvailable, capped by the cgroup headroom."""
    available = None
    meminfo = _read("/proc/meminfo")
    if meminfo:
        for line in meminfo.splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
                break
    if available is None:  # pragma: no cover - not Linux
        available = 4 << 30
    limit = memory_limit_bytes()
    usage = _cgroup_usage_bytes()
    if limit is not None:
        headroom = limit - (usage or 0)
        available = min(available, max(headroom, 0))
    return available


def limit_torch_threads() -> int:
    """Cap torch's intra-op threads to the CPU quota (Binder gives 1-2 CPUs of a big host)."""
    import torch

    n = cpu_quota()
    if torch.get_num_threads() > n:
        torch.set_num_threads(n)
    return n
