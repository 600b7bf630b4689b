"""Describe the machine a benchmark ran on, for the first line of its output."""

from __future__ import annotations

import os
import platform

import flyte
import psutil


def describe_machine() -> str:
    """Return the OS, cores, memory, Python and flyte versions, and the load average, on one line.

    The load average is there because the benchmarks run on shared machines: a figure taken at a load near the
    number of cores was taken while other jobs competed for every core.
    """
    load_1, load_5, _ = os.getloadavg()
    return (
        f"{platform.system()} {platform.release()}, {psutil.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.1f} GiB of memory, Python {platform.python_version()}, "
        f"flyte {flyte.__version__}, load average {load_1:.2f} (1 min) {load_5:.2f} (5 min)"
    )
