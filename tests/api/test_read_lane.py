"""The read lane: polled reads run in at most ``NETKILN_API_READ_THREADS`` threads, and
concurrent reads of one cache entry share one database read. Every wait here is on a
condition with a deadline, never on a duration."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import ValidationError

from api.read_lane import ReadLane
from api.services import jobs as service
from core.settings import Settings
from models.migrate import upgrade
from tests.conftest import api_client

DEADLINE = 60


class Gate:
    """A read that blocks until opened, counting how many times it began."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.began = 0
        self._lock = threading.Lock()

    def read(self, value: Any = "read") -> Any:
        with self._lock:
            self.began += 1
        assert self.opened.wait(DEADLINE), "the test never opened the gate"
        return value


async def until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        await anyio.sleep(0.01)


@pytest.mark.parametrize("threads", [1, 2])
def test_no_more_reads_run_than_the_lane_has_threads(threads: int) -> None:
    lane, gate = ReadLane(threads), Gate()
    results: list[int] = []

    async def main() -> None:
        async def one(index: int) -> None:
            results.append(await lane.run(gate.read, index))

        async with anyio.create_task_group() as tasks:
            for index in range(5):
                tasks.start_soon(one, index)
            await until(lambda: (gate.began, lane.waiting) == (threads, 5 - threads))
            assert lane.busy == threads
            gate.opened.set()

    anyio.run(main)
    assert sorted(results) == [0, 1, 2, 3, 4]
    assert (gate.began, lane.busy, lane.waiting) == (5, 0, 0)


def test_calls_with_one_key_share_one_read() -> None:
    lane, gate = ReadLane(1), Gate()
    results: list[str] = []

    async def main() -> None:
        async def one(key: str) -> None:
            results.append(await lane.shared(key, gate.read, key))

        async with anyio.create_task_group() as tasks:
            for key in ("a", "a", "a", "b"):
                tasks.start_soon(one, key)
            # "b" waits for the lane's one thread, held by the read of "a".
            await until(lambda: lane.waiting == 1)
            gate.opened.set()
        # Shared reads are forgotten once done: the next call reads again.
        assert await lane.shared("a", gate.read, "again") == "again"

    anyio.run(main)
    assert sorted(results) == ["a", "a", "a", "b"]
    assert gate.began == 3


def test_a_shared_error_reaches_every_caller_and_is_not_remembered() -> None:
    lane = ReadLane(1)
    calls = 0

    def failing() -> None:
        nonlocal calls
        calls += 1
        raise LookupError("no such row")

    async def main() -> list[BaseException | None]:
        async def one() -> BaseException | None:
            try:
                await lane.shared("k", failing)
            except LookupError as exc:
                return exc
            return None

        return [await one(), await one()]

    errors = anyio.run(main)
    assert all(isinstance(error, LookupError) for error in errors)
    assert calls == 2  # sequential calls: each read anew


def test_a_caller_that_goes_away_leaves_the_read_to_the_others() -> None:
    lane, gate = ReadLane(1), Gate()

    async def main() -> str:
        async with anyio.create_task_group() as tasks:
            first = anyio.CancelScope()

            async def leaving() -> None:
                with first:
                    await lane.shared("k", gate.read, "value")

            tasks.start_soon(leaving)
            await until(lambda: gate.began == 1)
            first.cancel()
            remaining: list[str] = []

            async def staying() -> None:
                remaining.append(await lane.shared("k", gate.read, "other"))

            tasks.start_soon(staying)
            await anyio.sleep(0)
            gate.opened.set()
        return remaining[0]

    assert anyio.run(main) == "value"  # the one read, not a second
    assert gate.began == 1


@pytest.fixture
def gated_listing(monkeypatch: pytest.MonkeyPatch) -> Iterator[Gate]:
    """``list_jobs`` of the service, held at its start until the gate opens."""
    gate, real = Gate(), service.list_jobs

    def held(*args: Any, **kwargs: Any) -> Any:
        gate.read()
        return real(*args, **kwargs)

    monkeypatch.setattr(service, "list_jobs", held)
    yield gate
    gate.opened.set()


def test_listings_queue_for_the_lane(tmp_path: Path, gated_listing: Gate) -> None:
    settings = Settings(data_dir=tmp_path, api_read_threads=1)
    upgrade(settings.resolved_database_url)
    with api_client(settings) as client:
        lane: ReadLane = client.app.state.read_lane  # type: ignore[attr-defined]
        answers: list[int] = []

        def list_jobs() -> None:
            answers.append(client.get("/v1/jobs").status_code)

        readers = [threading.Thread(target=list_jobs) for _ in range(3)]
        for reader in readers:
            reader.start()
        try:
            deadline = time.monotonic() + DEADLINE
            while (gated_listing.began, lane.waiting) != (1, 2):
                assert time.monotonic() < deadline, (
                    f"the listings never queued for the lane: {gated_listing.began} began, "
                    f"{lane.busy} busy, {lane.waiting} waiting, answers {answers}"
                )
                time.sleep(0.01)
            assert lane.busy == 1
        finally:
            # Before the client closes: it waits for the requests in flight.
            gated_listing.opened.set()
            for reader in readers:
                reader.join(DEADLINE)
        assert answers == [200, 200, 200]
        assert gated_listing.began == 3


def test_the_setting_is_bounded() -> None:
    with pytest.raises(ValidationError, match="api_read_threads"):
        Settings(api_read_threads=0)
