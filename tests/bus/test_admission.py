"""StreamView and CapacityView: kept admission state that stays exact."""

from __future__ import annotations

import asyncio

from bus.admission import CapacityView, Reservation, StreamView


class Reads:
    """A read function that returns queued values and counts its calls."""

    def __init__(self, *values: object) -> None:
        self.values = list(values)
        self.calls = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self) -> object:
        self.calls += 1
        await self.gate.wait()
        return self.values.pop(0)


async def test_view_reserves_up_to_capacity() -> None:
    view = StreamView(Reads((1, 10)))  # type: ignore[arg-type]
    await view.refresh()
    first = view.reserve(3)
    second = view.reserve(3)
    third = view.reserve(3)
    assert first is not None
    assert second is not None
    assert first.expected_last_seq == 10
    assert second.expected_last_seq == 11
    assert third is None


async def test_view_unknown_reserves_nothing() -> None:
    view = StreamView(Reads())  # type: ignore[arg-type]
    assert view.reserve(9) is None
    assert view.known is False


async def test_view_failed_publish_forgets() -> None:
    view = StreamView(Reads((0, 5)))  # type: ignore[arg-type]
    await view.refresh()
    reservation = view.reserve(9)
    assert reservation is not None
    view.settle(reservation, stored=False)
    assert view.known is False
    assert view.reserve(9) is None


async def test_view_stored_publish_keeps_view() -> None:
    view = StreamView(Reads((0, 5)))  # type: ignore[arg-type]
    await view.refresh()
    reservation = view.reserve(9)
    assert reservation is not None
    view.settle(reservation, stored=True)
    following = view.reserve(9)
    assert following is not None
    assert following.expected_last_seq == 6


async def test_view_old_failure_keeps_new_read() -> None:
    view = StreamView(Reads((0, 5), (2, 8)))  # type: ignore[arg-type]
    await view.refresh()
    old = view.reserve(9)
    assert old is not None
    view.settle(old, stored=True)
    await view.refresh()
    current = view.reserve(9)
    assert current is not None
    # A publish reserved before the last read fails only after that read.
    view.settle(Reservation(old.expected_last_seq, old.generation), stored=False)
    assert view.known is True
    assert current.expected_last_seq == 8


async def test_view_refresh_waits_for_pending() -> None:
    reads = Reads((0, 0), (0, 1))
    view = StreamView(reads)  # type: ignore[arg-type]
    await view.refresh()
    reservation = view.reserve(1)
    assert reservation is not None
    refresh = asyncio.create_task(view.refresh())
    await asyncio.sleep(0)
    assert reads.calls == 1
    view.settle(reservation, stored=True)
    await refresh
    assert reads.calls == 2
    assert view.reserve(1) is not None


async def test_view_refresh_shared_by_callers() -> None:
    reads = Reads((4, 20))
    reads.gate.clear()
    view = StreamView(reads)  # type: ignore[arg-type]
    waiters = [asyncio.create_task(view.refresh()) for _ in range(5)]
    await asyncio.sleep(0)
    reads.gate.set()
    await asyncio.gather(*waiters)
    assert reads.calls == 1
    assert view.known is True


async def test_capacity_keeps_positive_value() -> None:
    reads = Reads(9, 6)
    capacity = CapacityView(reads, max_age_s=60.0)  # type: ignore[arg-type]
    first = await capacity.get()
    second = await capacity.get()
    assert first == 9
    assert second == 9
    assert reads.calls == 1


async def test_capacity_rereads_zero() -> None:
    reads = Reads(0, 3)
    capacity = CapacityView(reads, max_age_s=60.0)  # type: ignore[arg-type]
    first = await capacity.get()
    second = await capacity.get()
    assert first == 0
    assert second == 3
    assert reads.calls == 2


async def test_capacity_rereads_when_old() -> None:
    reads = Reads(9, 6)
    capacity = CapacityView(reads, max_age_s=0.0)  # type: ignore[arg-type]
    await capacity.get()
    second = await capacity.get()
    assert second == 6
    assert capacity.last == 6
