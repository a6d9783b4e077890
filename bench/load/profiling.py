"""``api_load --profile``: py-spy (GIL-holding samples only) on the single ``netkiln api``
process under c=8 status reads, summed by function (self and inclusive) and by package."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from load.loadgen import LoadGen
from netkiln.harness import Process


def profile_get(
    loadgen: LoadGen, base_url: str, job_id: str, server: Process, seconds: float, out: Path
) -> dict[str, Any]:
    """py-spy (GIL-holding samples only) on the single API process under c=8 GET load."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        return {"error": "py-spy not installed (pip install py-spy)"}
    command = [py_spy, "record", "-p", str(server.pid), "-d", f"{seconds:g}", "-r", "200"]
    command += ["--gil", "--nolineno", "-f", "raw", "-o", str(out)]
    spy = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(0.5)
    load = loadgen.run(f"{base_url}/v1/jobs/{job_id}", 8, seconds + 1)
    output, _ = spy.communicate(timeout=seconds + 60)
    if spy.returncode != 0 or not out.exists():
        return {"error": f"py-spy failed ({spy.returncode}): {output[-2000:]}"}
    return {"raw": str(out), "rps_while_sampled": load["rps"], **summarize_profile(out)}


def _package(frame: str) -> str:
    """``func (path)`` → the top package of ``path`` (``sqlalchemy``, ``api``, ``json``…)."""
    path = frame[frame.rfind("(") + 1 : -1] if frame.endswith(")") else frame
    parts = Path(path).parts
    for index in range(len(parts) - 1, -1, -1):
        if parts[index] in ("site-packages", "dist-packages") or parts[index].startswith("python3"):
            parts = parts[index + 1 :]
            break
    return parts[0].removesuffix(".py") if parts else path


#: Frames at the root of every stack (start-up, the event loop, thread bootstrap, ASGI
#: plumbing), matched by file or name: left out of the inclusive ranking, where they would
#: all tie at the top.
ROOT_FRAMES = (
    "<frozen runpy>",
    "typer/",
    "click/",
    "netkiln/",
    "uvicorn/main.py",
    "uvicorn/server.py",
    "uvicorn/_compat.py",
    "asyncio/runners.py",
    "asyncio/base_events.py",
    "asyncio/events.py",
    "threading.py",
    # The ASGI plumbing between uvicorn and the route: every request passes through it.
    "uvicorn/protocols/",
    "uvicorn/middleware/",
    "Middleware.__call__",
    "Starlette.__call__",
    "FastAPI.__call__",
    "wrapped_app (",
    "Router.__call__",
    "APIRouter.app (",
    "Router.handle (",
    "Router._handle_selected (",
    "APIRoute.handle (",
    "request_response.<locals>.app",
)


def summarize_profile(raw: Path, top: int = 20) -> dict[str, Any]:
    """Self and inclusive sample shares per function, and self share per package."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame for frame in stack.split(";") if frame and not frame.startswith("thread")]
        if not frames:
            continue
        total += count
        for frame in set(frames):
            if not any(marker in frame for marker in ROOT_FRAMES):
                inclusive[frame] += count
        own[frames[-1]] += count
        packages[_package(frames[-1])] += count

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, count / total) for name, count in counter.most_common(top)]

    return {
        "samples": total,
        "self": share(own),
        "inclusive": share(inclusive),
        "self_by_package": share(packages),
    }
