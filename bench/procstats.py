"""Where the CPU went, and when a worker is warm: what the benches measure about the
processes ``netkiln.harness`` starts (each in a session of its own). Linux only (/proc)."""

from __future__ import annotations

import contextlib
import resource
import sys
import time
from pathlib import Path

from netkiln.harness import CLOCK_TICKS, HarnessError, Process, session_processes


def machine_busy_s() -> float:
    """CPU seconds spent non-idle by the whole machine since boot (all cores)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / CLOCK_TICKS


def children_cpu_s() -> float:
    """CPU seconds of this process's children that have ended and been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def session_cpu_s(sid: int) -> float:
    """CPU seconds the live processes of session ``sid`` have used so far."""
    return sum(proc.cpu_s for proc in session_processes(sid))


def tensorflow_loaded(pids: list[int]) -> bool:
    for pid in pids:
        with contextlib.suppress(OSError):
            if "libtensorflow" in Path(f"/proc/{pid}/maps").read_text():
                return True
    return False


def wait_until_warm(process: Process, timeout: float = 180) -> float:
    """Seconds until some process of ``process``'s session (a worker's pool process) has
    TensorFlow mapped and the whole session has been idle (<10% of a core) for two
    consecutive seconds: a service's worker is warm, its start-up is not what is timed."""
    start = time.monotonic()
    quiet = 0
    previous = session_cpu_s(process.pid)
    while time.monotonic() - start < timeout:
        time.sleep(1.0)
        if process.poll() is not None:
            raise HarnessError(f"{process.name} exited ({process.poll()}):\n{process.tail()}")
        procs = session_processes(process.pid)
        total = sum(proc.cpu_s for proc in procs)
        busy, previous = total - previous, total
        warm = tensorflow_loaded([proc.pid for proc in procs])
        quiet = quiet + 1 if warm and busy < 0.1 else 0
        if quiet >= 2:
            return time.monotonic() - start
    raise HarnessError(f"{process.name} not warm after {timeout:g} s:\n{process.tail()}")


def other_bench_processes() -> list[str]:
    """netkiln / plain_keras processes on this machine that this run did not start: they
    take CPU away from the measurement."""
    import psutil

    me = psutil.Process()
    mine = {me.pid, *(child.pid for child in me.children(recursive=True))}
    script = Path(sys.argv[0]).name
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        argv = proc.info["cmdline"] or []
        cmdline = " ".join(argv)
        if proc.info["pid"] in mine or script in cmdline:
            continue
        if not argv or not Path(argv[0]).name.startswith(("python", "netkiln")):
            continue  # a shell or grep that merely mentions the name
        if "netkiln" in cmdline or "plain_keras" in cmdline:
            found.append(f"{proc.info['pid']}: {cmdline[:120]}")
    return found
