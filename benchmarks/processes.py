"""Running a benchmark's contender in a process of its own, and that process's peak memory;
the CPU time of a server's processes.

A contender started afresh (not forked) holds only what it loads itself, so its peak
resident memory is its own; Linux's ``VmHWM`` counts this process only, where
``ru_maxrss`` would start from the parent's size (it survives ``exec``).
"""

from __future__ import annotations

import compileall
import multiprocessing
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Faucet's packages, beside this folder.
_PROJECT = Path(__file__).resolve().parents[1]

_SPAWN = multiprocessing.get_context("spawn")


def run_apart(function: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """``function(*args)`` in a process of its own (started afresh, not forked), with the
    process's peak resident memory added as ``peak`` (bytes)."""
    results = _SPAWN.Queue()
    process = _SPAWN.Process(target=_run_and_report, args=(results, function, *args))
    process.start()
    try:
        outcome = results.get()
    finally:
        process.join()
    if isinstance(outcome, BaseException):
        raise outcome
    return dict(outcome)


def _run_and_report(results: Any, function: Callable[..., dict[str, Any]], *args: Any) -> None:
    try:
        outcome = function(*args)
        outcome["peak"] = peak_memory()
    except BaseException as error:  # reported to the benchmark, which raises it
        results.put(RuntimeError(f"{function.__name__}: {type(error).__name__}: {error}"))
        raise
    results.put(outcome)


def peak_memory() -> int:
    """This process's peak resident memory (``VmHWM``), in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def tree_cpu(pid: int) -> float:
    """The CPU time (user and system, in seconds) that process ``pid`` and its descendants
    have used, those that ended and were waited for included (Linux's ``/proc``)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    ticks = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile: its parent counts it once it is waited for
            continue
        parents[int(entry.name)] = int(fields[1])
        # utime, stime, and those of the children it waited for
        times[int(entry.name)] = sum(int(value) for value in fields[11:15]) / ticks
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        total += times.get(current, 0.0)
        pending += [child for child, parent in parents.items() if parent == current]
    return total


def compile_project() -> None:
    """Compile Faucet's modules, as installing a package does. Where Python may not write
    bytecode (``PYTHONDONTWRITEBYTECODE``), each process would otherwise compile every
    module it imports from source: in Faucet's first epoch, the plugins it loads when it
    opens, which no installed reader does."""
    for package in sorted(_PROJECT.glob("faucet_*/__init__.py")):
        compileall.compile_dir(package.parent, quiet=1)
