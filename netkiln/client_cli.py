"""Client commands of ``netkiln``: submit, follow, list, inspect, cancel and download jobs
through the REST API (``netkiln.client``). Registered onto the app by ``netkiln.cli``."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
import typer
from rich.console import Console
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from netkiln.admin_cli import local_key
from netkiln.client import DEFAULT_URL, ApiError, Client, format_detail

UrlOption = Annotated[
    str, typer.Option("--url", envvar="NETKILN_URL", help="The netkiln API.", show_envvar=True)
]
KeyOption = Annotated[
    str | None,
    typer.Option(
        "--key",
        envvar="NETKILN_API_KEY",
        help="Sent as a Bearer token. [default: the key `netkiln up` saved in "
        "$NETKILN_DATA_DIR/api-key]",
        show_envvar=True,
    ),
]
SpecArgument = Annotated[
    Path, typer.Argument(exists=True, dir_okay=False, help="A job spec (JSON).")
]
JobIdArgument = Annotated[
    str, typer.Argument(help="A job id, or a unique start of one (as `netkiln jobs` shows).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the API's JSON document.")]

TERMINAL = {"succeeded", "failed", "cancelled"}
#: Warnings the worker adds to a job that ended (worker/outcomes.py).
OUTCOME_WARNINGS = {"no_better_than_chance", "loss_diverged"}
#: How often ``submit --wait`` reads the job for its batch progress.
POLL_SECONDS = 0.5
#: After the event stream ended, how long to wait for a status read to show the end.
SETTLE_SECONDS = 5.0
STATUS_STYLE = {
    "queued": "yellow",
    "running": "cyan",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "magenta",
    # A sweep's trials: stopped at an ASHA rung, or never started (the budget ran out).
    "pruned": "blue",
    "skipped": "dim",
}

console = Console(highlight=False)
err = Console(stderr=True, highlight=False)


@contextmanager
def _client(url: str, key: str | None) -> Iterator[Client]:
    """The client; an error answer or an unreachable server ends the command with 1."""
    try:
        with Client(url, key or local_key()) as client:
            yield client
    except ApiError as exc:
        err.print(f"[red]error {exc.status_code}[/red]: {format_detail(exc.detail)}")
        raise typer.Exit(1) from None
    except httpx.TransportError as exc:
        err.print(f"[red]cannot reach {url}[/red]: {exc}")
        raise typer.Exit(2) from None


def _read_spec(path: Path) -> dict[str, Any]:
    try:
        spec: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        err.print(f"[red]{path} is not JSON[/red]: {exc}")
        raise typer.Exit(1) from None
    return spec


def _metrics(values: dict[str, Any]) -> str:
    skip = {"epoch", "epochs", "seconds"}
    return "  ".join(
        f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
        for key, value in values.items()
        if key not in skip
    )


def _size(count: int) -> str:
    for unit in ("bytes", "KiB", "MiB"):
        if count < 1024:
            return f"{count:.0f} {unit}"
        count //= 1024
    return f"{count:,} GiB"


def _status(status: str) -> str:
    return f"[{STATUS_STYLE.get(status, 'white')}]{status}[/]"


def _outcome(job: dict[str, Any]) -> int:
    """Print how the job ended; 0 if it succeeded, else 1."""
    status = job["status"]
    if status == "succeeded":
        test = job.get("test_metrics")
        console.print(
            f"{job['id']} {_status(status)}" + (f"  test: {_metrics(test)}" if test else "")
        )
        # Succeeded is not the same as learned: outcome warnings say when it did not.
        for warning in job.get("warnings", []):
            if warning["code"] in OUTCOME_WARNINGS:
                console.print(f"[yellow]warning[/yellow] {warning['code']}: {warning['message']}")
        return 0
    error = job.get("error")
    reason = f"{error['code']}: {error['message']}" if error else "cancelled"
    err.print(f"{job['id']} {_status(status)}: {reason}")
    return 1


def submit(
    spec_path: SpecArgument,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the job to its end.")] = False,
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = None,
) -> None:
    """Submit a job spec; print the job id. --wait: show progress, exit 1 unless it succeeds."""
    spec = _read_spec(spec_path)
    with _client(url, key) as client:
        job = client.submit(spec)
        console.print(job["id"])
        if not wait:
            return
        code = _follow_sweep(client, job) if job["kind"] == "sweep" else _follow(client, job)
    raise typer.Exit(code)


def _follow_sweep(client: Client, sweep: dict[str, Any]) -> int:
    """A live table of the sweep's trials, redrawn as they change, until the sweep ends."""
    with Live(console=console, auto_refresh=False) as live:
        while True:
            job = client.job(sweep["id"])
            live.update(_trials_table(client.trials(sweep["id"])), refresh=True)
            if job["status"] in TERMINAL:
                break
            time.sleep(POLL_SECONDS)
    return _outcome(job)


def _trials_table(table: dict[str, Any]) -> Table:
    best = table["best"]
    direction = "lowest" if table["direction"] == "min" else "highest"
    out = Table(
        "#",
        "state",
        table["metric"],
        "epochs",
        "rungs",
        "params",
        "job",
        title=f"sweep {table['sweep_id']} ({_status(table['status'])}): {direction} "
        f"{table['metric']} first" + (f"; best #{best}" if best else ""),
    )
    for trial in table["trials"]:
        objective = trial["objective"]
        rungs = " ".join(f"{value:.4g}" for _, value in sorted(trial["rungs"].items()))
        out.add_row(
            f"{trial['number']}{' *' if trial['number'] == best else ''}",
            _status(trial["state"]),
            "" if objective is None else f"{objective:.4f}",
            f"{trial['epochs']}/{trial['max_epochs'] or '?'}",
            rungs,
            ", ".join(f"{path}={_value(value)}" for path, value in trial["params"].items()),
            (trial["job_id"] or "")[:8],
        )
    return out


def _value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else json.dumps(value)


def trials(
    job_id: JobIdArgument,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = None,
) -> None:
    """A sweep's trials, best objective first (* marks the best; its model is the sweep's)."""
    with _client(url, key) as client:
        table = client.trials(client.resolve(job_id))
    if as_json:
        print(json.dumps(table, indent=2))
        return
    console.print(_trials_table(table))


def _follow(client: Client, job: dict[str, Any]) -> int:
    """Epoch lines from the event stream, the batch bar from polling the job."""
    job_id = job["id"]
    epochs = job["progress"]["epochs"] or None
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[metrics]}"),
        console=console,
        transient=False,
    )
    with progress:
        overall = progress.add_task("epochs", total=epochs, metrics="")
        batches = progress.add_task("epoch 1", total=None, metrics=job["status"])
        stop = threading.Event()
        poller = threading.Thread(
            target=_poll, args=(client, job_id, progress, batches, stop), daemon=True
        )
        poller.start()
        last_event = 0
        try:
            while True:
                for event in client.events(job_id, after=last_event):
                    last_event = int(event.get("id") or last_event)
                    _show(progress, overall, batches, event, epochs)
                final = _settled(client, job_id)
                if final is not None:
                    break
                # The stream broke off before the job ended: pick it up where it stopped.
        finally:
            stop.set()
            poller.join(timeout=2)
        if final["status"] == "succeeded":
            progress.update(overall, completed=final["progress"]["epochs"])
        progress.remove_task(batches)
    return _outcome(final)


def _settled(client: Client, job_id: str) -> dict[str, Any] | None:
    """The ended job, once a status read shows it: reads may lag the event stream by the
    server's read cache (NETKILN_READ_CACHE_SECONDS, under a second). None if the job
    is still going after a few seconds."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        job = client.job(job_id)
        if job["status"] in TERMINAL or time.monotonic() > deadline:
            return job if job["status"] in TERMINAL else None
        time.sleep(0.2)


def _show(
    progress: Progress, overall: TaskID, batches: TaskID, event: dict[str, Any], epochs: int | None
) -> None:
    """One event of the stream as a line above the bars."""
    data = event["data"]
    kind = event.get("event")
    if kind == "epoch":
        epoch, total = data["epoch"], data.get("epochs") or epochs
        progress.console.print(
            f"epoch {epoch}/{total}  {_metrics(data)}  ({data.get('seconds', 0):.1f}s)"
        )
        progress.update(overall, completed=epoch, total=total)
        progress.reset(batches, description=f"epoch {epoch + 1}", metrics="")
    elif kind == "status":
        progress.console.print(f"status: {_status(data['status'])}")
    elif kind == "log" and data.get("level") in {"warning", "error"}:
        progress.console.print(f"{data['level']}: {data['message']}")


def _poll(
    client: Client, job_id: str, progress: Progress, task: TaskID, stop: threading.Event
) -> None:
    """About twice a second: the current epoch's batches and the server's ETA."""
    while not stop.wait(POLL_SECONDS):
        try:
            job = client.job(job_id)
        except (ApiError, httpx.HTTPError):
            continue
        state = job["progress"]
        eta = state.get("eta_seconds")
        note = f"{job['status']}" + (f"  job ETA {eta:.0f}s" if eta is not None else "")
        steps = state["steps_per_epoch"] or None
        progress.update(task, total=steps, completed=state["batch"], metrics=note)


def jobs(
    status: Annotated[
        str | None, typer.Option("--status", help="queued, running, succeeded, failed, cancelled")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=100)] = 50,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = None,
) -> None:
    """List jobs, newest first."""
    with _client(url, key) as client:
        items = client.jobs(status, limit)
    if as_json:
        print(json.dumps(items, indent=2))
        return
    table = Table("id", "name", "kind", "status", "epoch", "created", "last metrics")
    table.columns[0].overflow = "fold"  # whole ids, wrapped if they must be, never cut
    for job in items:
        progress = job["progress"]
        table.add_row(
            job["id"],
            job["name"] or "",
            job["kind"],
            _status(job["status"]),
            f"{progress['epoch']}/{progress['epochs']}",
            job["created_at"][:19].replace("T", " "),
            _metrics(job["last_metrics"] or {}),
        )
    console.print(table)


def status(
    job_id: JobIdArgument,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = None,
) -> None:
    """One job: status, progress, error, parameters and metrics."""
    with _client(url, key) as client:
        job = client.job(client.resolve(job_id))
    if as_json:
        print(json.dumps(job, indent=2))
        return
    progress = job["progress"]
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    rows: list[tuple[str, str]] = [
        ("id", job["id"]),
        ("name", job["name"] or ""),
        ("kind", job["kind"]),
        ("status", _status(job["status"])),
        ("attempt", f"{job['attempt']}/{job['max_attempts']}"),
        (
            "progress",
            f"epoch {progress['epoch']}/{progress['epochs']}, "
            f"batch {progress['batch']}/{progress['steps_per_epoch']} "
            f"({progress['fraction']:.0%})",
        ),
    ]
    if progress.get("eta_seconds") is not None:
        rows.append(("eta", f"{progress['eta_seconds']:.0f}s"))
    if job.get("queue"):
        queue = job["queue"]
        rows.append(
            (
                "waits",
                f"{queue['reason']} (#{queue['position']} in {queue['queue']}): {queue['message']}",
            )
        )
    for plan in job.get("execution") or []:
        rows.append(
            (
                "execution",
                f"{plan['steps_per_execution']} steps per execution, {plan['backend']} on "
                f"{', '.join(plan['devices'])}, {plan['precision']}"
                + (", XLA" if plan["jit_compile"] else ""),
            )
        )
    if job.get("error"):
        rows.append(("error", f"{job['error']['code']}: {job['error']['message']}"))
    if job.get("params"):
        params = job["params"]
        rows.append(("params", f"{params['total']:,} ({params['non_trainable']:,} non-trainable)"))
    for label, key_ in (("last", "last_metrics"), ("test", "test_metrics")):
        if job.get(key_):
            rows.append((label, _metrics(job[key_])))
    for warning in job.get("warnings", []):
        rows.append(("warning", f"{warning['code']}: {warning['message']}"))
    for label, value in rows:
        table.add_row(label, value)
    console.print(table)


def logs(
    job_id: JobIdArgument,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Until the job ends.")] = False,
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = None,
) -> None:
    """The worker's log lines for a job: one per epoch, and how it ended."""
    with _client(url, key) as client:
        job_id = client.resolve(job_id)
        after = 0
        while True:
            page = client.logs(job_id, after)
            for line in page["lines"]:
                console.print(
                    f"{line['time'][:19].replace('T', ' ')} {line['level']:<7} {line['message']}",
                    markup=False,
                )
            after = page["next_after"]
            if not follow or (not page["lines"] and client.job(job_id)["status"] in TERMINAL):
                return
            if not page["lines"]:
                time.sleep(1.0)


def cancel(job_id: JobIdArgument, url: UrlOption = DEFAULT_URL, key: KeyOption = None) -> None:
    """Cancel a queued or running job."""
    with _client(url, key) as client:
        job = client.cancel(client.resolve(job_id))
    console.print(
        f"{job['id']} {_status(job['status'])}"
        + (" (cancel requested)" if job["status"] == "running" else "")
    )


def delete(job_id: JobIdArgument, url: UrlOption = DEFAULT_URL, key: KeyOption = None) -> None:
    """Delete an ended job: its rows, its child jobs, its stored models and checkpoint."""
    with _client(url, key) as client:
        resolved = client.resolve(job_id)
        client.delete(resolved)
    console.print(f"{resolved} deleted")


def download(
    job_id: JobIdArgument,
    fmt: Annotated[
        Literal["keras", "h5", "checkpoint"], typer.Option("--format", help="keras, h5, checkpoint")
    ] = "keras",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", dir_okay=False, help="Default: its name.")
    ] = None,
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = None,
) -> None:
    """Download a job's trained model."""
    with _client(url, key) as client:
        path = client.download(client.resolve(job_id), fmt, output)
    console.print(f"{path} ({path.stat().st_size:,} bytes)")


def validate(spec_path: SpecArgument, url: UrlOption = DEFAULT_URL, key: KeyOption = None) -> None:
    """Dry-run a spec: its layers, output shapes and parameters; exit 1 if it is invalid."""
    spec = _read_spec(spec_path)
    with _client(url, key) as client:
        result = client.submit(spec, dry_run=True)
    if "trials" in result:  # a sweep: what it would train
        _print_planned_sweep(result)
        return
    summary = result.get("summary")
    if summary:
        table = Table("#", "layer", "type", "output shape", "params", "non-trainable")
        for layer in summary["layers"]:
            shape = ", ".join("None" if dim is None else str(dim) for dim in layer["output_shape"])
            table.add_row(
                str(layer["index"]),
                layer["name"],
                layer["type"],
                f"({shape})",
                f"{layer['params']:,}",
                f"{layer['non_trainable']:,}",
            )
        console.print(table)
        console.print(
            f"total params: {summary['total']:,}  trainable: {summary['trainable']:,}  "
            f"non-trainable: {summary['non_trainable']:,}"
        )
        console.print(
            f"memory estimate: {_size(summary['memory_estimate_bytes'])} "
            f"(batch {summary['batch_size']})"
        )
    else:
        console.print("no summary: the base model's shapes could not be read")
    for warning in result.get("warnings", []):
        loc = ".".join(str(part) for part in warning.get("loc", []))
        console.print(f"[yellow]warning[/yellow] {warning['code']} ({loc}): {warning['message']}")
    console.print("[green]valid[/green]")


def _print_planned_sweep(result: dict[str, Any]) -> None:
    table = Table("#", "params", "epochs", "seed")
    for trial in result["trials"]:
        params = ", ".join(f"{path}={_value(value)}" for path, value in trial["params"].items())
        table.add_row(str(trial["number"]), params, str(trial["max_epochs"]), str(trial["seed"]))
    console.print(table)
    if result["rungs"]:
        console.print(
            f"ASHA rungs at epochs {', '.join(map(str, result['rungs']))}: about "
            f"{result['expected_epochs_total']:,} epochs, at most {result['max_epochs_total']:,}"
        )
    else:
        console.print(f"{len(result['trials'])} trials, {result['max_epochs_total']:,} epochs")
    console.print("[green]valid[/green]")


COMMANDS: list[Callable[..., None]] = [
    submit,
    validate,
    jobs,
    status,
    trials,
    logs,
    cancel,
    delete,
    download,
]


def register(app: typer.Typer) -> None:
    for command in COMMANDS:
        app.command(rich_help_panel="Client")(command)
