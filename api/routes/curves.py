"""/v1/jobs learning curves as PNG, drawn with matplotlib in the API's threadpool.

Figures are made with ``matplotlib.figure.Figure``, not pyplot: no global state and no GUI
backend; ``savefig`` renders PNG with Agg.

Mounted before the jobs router, so ``/v1/jobs/compare.png`` is not read as a job id.
"""

from __future__ import annotations

import io
import json
import threading
import uuid
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from matplotlib.figure import Figure
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.deps import CallerDep, JobDep, SessionDep, get_caller
from api.errors import UNAUTHORIZED, Conflict, NetkilnError, NotFound, error_responses
from api.schemas import BINARY
from models.spec.sweep import AshaStrategy, LogUniform, SweepJobSpec
from models.sweeps.plan import asha_rungs
from models.sweeps.schedule import best_trial, ranked
from models.tables import EpochMetrics, Job, SweepTrial

router = APIRouter(
    prefix="/v1/jobs", tags=["curves"], dependencies=[Depends(get_caller)], responses=UNAUTHORIZED
)

#: 10 × 6 inches at 100 dpi: every PNG is 1000 × 600 pixels.
FIGSIZE = (10.0, 6.0)
DPI = 100
PNG: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {"schema": BINARY}}, "description": "A PNG image"}
}
#: Series drawn on the secondary axis or not at all, rather than as a curve of their own.
NOT_CURVES = {"learning_rate", "lr", "seconds", "epoch"}
MAX_COMPARED = 20
# Figure is thread-safe per instance, but font and text caches in matplotlib are not.
_draw_lock = threading.Lock()


Rows = list[tuple[int, dict[str, Any]]]


def _rows(session: Session, job_id: uuid.UUID) -> Rows:
    rows = session.scalars(
        select(EpochMetrics).where(EpochMetrics.job_id == job_id).order_by(EpochMetrics.epoch)
    )
    return [(row.epoch, row.values) for row in rows]


def _series(rows: Rows, key: str) -> tuple[list[int], list[float]]:
    points = [(epoch, float(values[key])) for epoch, values in rows if _is_number(values.get(key))]
    return [epoch for epoch, _ in points], [value for _, value in points]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _title(job: Job) -> str:
    return f"{plain(job.name or str(job.id))} ({job.status})"


def plain(text: str) -> str:
    """``text`` drawn as written: matplotlib reads ``$…$`` as TeX math, and a name such
    as ``a $\\foo{$`` is then a parse error instead of a title."""
    return text.replace("$", r"\$")


def _png(figure: Figure) -> Response:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return Response(
        buffer.getvalue(), media_type="image/png", headers={"Cache-Control": "no-cache"}
    )


def draw_curves(title: str, rows: Rows) -> Figure:
    """Loss and each metric (train solid, ``val_`` dashed, same colour), and the learning
    rate on a secondary axis, log-scaled, where it changed (a constant rate is in the
    title). The legend sits outside the axes, so it hides no line."""
    figure = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    axes = figure.add_subplot()
    names = sorted(
        {key for _, values in rows for key in values if not key.startswith("val_")} - NOT_CURVES,
        key=lambda name: (name != "loss", name),
    )
    names += sorted(
        {key[4:] for _, values in rows for key in values if key.startswith("val_")} - set(names)
    )
    for index, name in enumerate(names):
        colour = f"C{index % 10}"
        for key, style in ((name, "-"), (f"val_{name}", "--")):
            epochs, values = _series(rows, key)
            if epochs:
                axes.plot(epochs, values, style, color=colour, marker=".", label=key)
    axes.set_xlabel("epoch")
    axes.set_ylabel("loss / metric")
    axes.grid(True, alpha=0.3)
    handles, labels = axes.get_legend_handles_labels()
    epochs, rates = _series(rows, "learning_rate")
    if len(set(rates)) > 1:
        lr_axes = axes.twinx()
        (line,) = lr_axes.plot(epochs, rates, ":", color="black", alpha=0.7, label="learning_rate")
        lr_axes.set_ylabel("learning rate")
        if min(rates) > 0:
            lr_axes.set_yscale("log")
        handles.append(line)
        labels.append("learning_rate")
    elif rates:
        title = f"{title}  (learning rate {rates[0]:g})"
    if handles:
        figure.legend(handles, labels, loc="outside right upper", fontsize="small")
    axes.set_title(title)
    return figure


def draw_comparison(metric: str, series: Sequence[tuple[str, str, Rows]]) -> Figure:
    """One line per job: ``metric`` where the job recorded it, else its training twin."""
    figure = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    axes = figure.add_subplot()
    fallback = metric[4:] if metric.startswith("val_") else metric
    for label, _status, rows in series:
        key = metric if _series(rows, metric)[0] else fallback
        epochs, values = _series(rows, key)
        if epochs:
            suffix = "" if key == metric else f" ({key})"
            axes.plot(epochs, values, marker=".", label=plain(f"{label}{suffix}"))
    axes.set_xlabel("epoch")
    axes.set_ylabel(plain(metric))
    axes.grid(True, alpha=0.3)
    if axes.get_legend_handles_labels()[0]:  # else no job recorded the metric
        figure.legend(loc="outside right upper", fontsize="small")
    axes.set_title(plain(f"{metric} of {len(series)} jobs"))
    return figure


@router.get(
    "/compare.png",
    response_class=Response,
    responses={
        **PNG,
        **error_responses(
            {
                400: "ids is not 1 to 20 comma-separated job ids.",
                404: "An unknown job id.",
                409: "None of the jobs has finished an epoch yet.",
            }
        ),
    },
)
def compare_png(
    session: SessionDep,
    caller: CallerDep,
    ids: Annotated[str, Query(description="Comma-separated job ids.")],
    metric: Annotated[
        str, Query(max_length=100, description="Falls back to its training twin (loss).")
    ] = "val_loss",
) -> Response:
    """Several jobs' curves of one metric, overlaid, with a legend of job names."""
    try:
        job_ids = list(dict.fromkeys(uuid.UUID(part.strip()) for part in ids.split(",") if part))
    except ValueError as exc:
        raise NetkilnError(f"ids must be comma-separated job ids: {exc}") from exc
    if not job_ids or len(job_ids) > MAX_COMPARED:
        raise NetkilnError(f"ids must name between 1 and {MAX_COMPARED} jobs")
    series: list[tuple[str, str, Rows]] = []
    for job_id in job_ids:
        job = session.get(Job, job_id)
        if job is None or job.tenant_id != caller.tenant:
            raise NotFound(f"no job {job_id}")
        label = job.name or str(job.id)[:8]
        if any(existing == label for existing, _, _ in series):
            label = f"{label} ({str(job.id)[:8]})"
        series.append((label, str(job.status), _rows(session, job.id)))
    if not any(rows for _, _, rows in series):
        raise Conflict("none of these jobs has finished an epoch yet")
    with _draw_lock:
        return _png(draw_comparison(metric, series))


@router.get(
    "/{job_id:uuid}/curves.png",
    response_class=Response,
    responses={**PNG, **error_responses({404: "No such job.", 409: "No epochs yet."})},
)
def curves_png(job: JobDep, session: SessionDep) -> Response:
    """The job's learning curves: loss and metrics, train solid and validation dashed, and
    the learning rate on the right-hand axis."""
    rows = _rows(session, job.id)
    if not rows:
        raise Conflict(f"job {job.id} is {job.status} and has no finished epoch yet")
    with _draw_lock:
        return _png(draw_curves(_title(job), rows))


#: Curves drawn in a sweep's first panel at most (the best first); every trial is a point
#: in the per-field panels.
MAX_SWEEP_CURVES = 100


def draw_sweep(
    title: str,
    spec: SweepJobSpec,
    trials: Sequence[SweepTrial],
    curves: dict[uuid.UUID, Rows],
    rungs: Sequence[int],
    best: int | None,
) -> Figure:
    """Panel 1: each trial's objective metric per epoch, ASHA's rungs as dashed lines,
    stopped trials grey, the best bold. One more panel per swept field: each trial's
    objective against its value there."""
    metric = spec.objective.metric
    fields = list(spec.space)
    columns = min(3, len(fields) + 1)
    rows_needed = -(-(len(fields) + 1) // columns)
    figure = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    grid = figure.subplots(rows_needed, columns, squeeze=False)
    axes = grid[0][0]
    for trial in trials[:MAX_SWEEP_CURVES]:
        if trial.job_id is None:
            continue
        epochs, values = _series(curves.get(trial.job_id, []), metric)
        if not epochs:
            continue
        style: dict[str, Any] = {"marker": ".", "linewidth": 1, "alpha": 0.8}
        if trial.state == "pruned":
            style.update(color="0.6", alpha=0.6)
        if trial.number == best:
            style.update(linewidth=2.5, alpha=1.0, label=f"best: #{trial.number}")
        axes.plot(epochs, values, **style)
    for rung in rungs[:-1]:
        axes.axvline(rung, color="0.3", linestyle="--", linewidth=0.8)
    axes.set_xlabel("epoch" + (" (dashed: ASHA rungs)" if len(rungs) > 1 else ""))
    axes.set_ylabel(plain(metric))
    axes.set_title("trials", fontsize="medium")
    axes.grid(True, alpha=0.3)
    if best is not None:
        axes.legend(fontsize="small")
    for index, path in enumerate(fields, start=1):
        panel = grid[index // columns][index % columns]
        _draw_field(panel, path, spec, trials, best)
    for index in range(len(fields) + 1, rows_needed * columns):
        grid[index // columns][index % columns].set_visible(False)
    figure.suptitle(plain(f"{title}: {metric} ({spec.objective.direction})"))
    return figure


def _draw_field(
    axes: Any, path: str, spec: SweepJobSpec, trials: Sequence[SweepTrial], best: int | None
) -> None:
    scored = [t for t in trials if t.objective is not None and path in t.params]
    values = [t.params[path] for t in scored]
    numeric = all(_is_number(value) for value in values)
    if numeric:
        xs: list[Any] = [float(value) for value in values]
        positive = [x for x in xs if x > 0]
        # Learning rates and the like: a log axis when the values span decades.
        if isinstance(spec.space[path], LogUniform) or (
            len(positive) == len(xs) and positive and max(xs) / min(xs) >= 100
        ):
            axes.set_xscale("log")
    else:
        labels = list(dict.fromkeys(_label(value) for value in values))
        xs = [labels.index(_label(value)) for value in values]
        axes.set_xticks(range(len(labels)), [plain(label) for label in labels], fontsize="small")
    colors = ["0.6" if t.state == "pruned" else "C0" for t in scored]
    axes.scatter(xs, [t.objective for t in scored], c=colors, s=18)
    for x, trial in zip(xs, scored, strict=True):
        if trial.number == best:
            axes.scatter([x], [trial.objective], s=80, facecolors="none", edgecolors="C3")
    axes.set_xlabel(plain(path), fontsize="small")
    axes.grid(True, alpha=0.3)


def _label(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return text if len(text) <= 24 else text[:23] + "…"


@router.get(
    "/{job_id:uuid}/sweep.png",
    response_class=Response,
    responses={
        **PNG,
        **error_responses({404: "No such job.", 409: "Not a sweep, or no trial scored yet."}),
    },
)
def sweep_png(job: JobDep, session: SessionDep) -> Response:
    """A sweep at a glance: its trials' curves of the objective (ASHA's rungs dashed,
    stopped trials grey, the best bold), and one panel per swept field with each trial's
    objective against its value."""
    if job.kind != "sweep":
        raise Conflict(f"job {job.id} is a {job.kind} job, not a sweep")
    spec = SweepJobSpec.model_validate(job.spec)
    trials = list(session.scalars(select(SweepTrial).where(SweepTrial.sweep_id == job.id)))
    best = best_trial(spec, trials)
    if not any(trial.epochs for trial in trials):
        raise Conflict(f"sweep {job.id} has no trial with a finished epoch yet")
    trials = ranked(spec, trials)
    curves = {
        trial.job_id: _rows(session, trial.job_id)
        for trial in trials[:MAX_SWEEP_CURVES]
        if trial.job_id is not None
    }
    max_epochs = max((job_epochs for job_epochs in _epochs_totals(session, trials)), default=0)
    rungs = (
        asha_rungs(spec.strategy, max_epochs)
        if isinstance(spec.strategy, AshaStrategy) and max_epochs
        else []
    )
    with _draw_lock:
        figure = draw_sweep(_title(job), spec, trials, curves, rungs, best.number if best else None)
        return _png(figure)


def _epochs_totals(session: Session, trials: Sequence[SweepTrial]) -> list[int]:
    ids = [trial.job_id for trial in trials if trial.job_id is not None]
    return list(session.scalars(select(Job.epochs_total).where(Job.id.in_(ids))))
