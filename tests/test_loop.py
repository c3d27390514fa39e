"""The event loop's own promises: timers that let go, callbacks that know their owner,
and the record of its longest step. In memory: the loop is driven turn by turn."""

from __future__ import annotations

import gc
import time
import weakref

import pytest

from muxserver.loop import EventLoop

pytestmark = pytest.mark.timeout(30)


class Owner:
    def __init__(self) -> None:
        self.failures: list[Exception] = []

    def fail(self, exc: Exception) -> None:
        self.failures.append(exc)

    def tick(self) -> None:
        pass


@pytest.fixture
def loop():
    loop = EventLoop(scratch_size=1024)
    try:
        yield loop
    finally:
        loop.close()


def test_a_cancelled_timer_lets_go_of_its_owner_at_once(loop):
    owner = Owner()
    gone = weakref.ref(owner)
    timer = loop.call_later(300, owner.tick, owner=owner)
    timer.cancel()
    del owner
    gc.collect()
    assert gone() is None  # freed now, not in 300 s when the timer would have fired


def test_the_timer_heap_is_rebuilt_when_mostly_cancelled(loop):
    timers = [loop.call_later(300 + i, Owner().tick) for i in range(3000)]
    for timer in timers[:2900]:
        timer.cancel()
    assert loop.timer_count < 300
    loop.run_once(max_wait=0)
    assert not any(t.cancelled for t in timers[2900:])


def test_an_error_in_a_callback_fails_its_owner_and_nobody_else(loop):
    first, second = Owner(), Owner()
    loop.call_soon(lambda: 1 / 0, owner=first)
    loop.call_soon(second.tick, owner=second)
    loop.call_at(time.monotonic() - 1, lambda: [][1], owner=second)  # due already
    loop.run_once(max_wait=0)
    assert [type(e) for e in first.failures] == [ZeroDivisionError]
    assert [type(e) for e in second.failures] == [IndexError]


def test_the_loop_records_its_longest_step(loop):
    def slow() -> None:
        started = time.perf_counter()
        while time.perf_counter() - started < 0.03:
            pass

    loop.call_soon(Owner().tick)
    loop.call_soon(slow)
    loop.run_once(max_wait=0)
    assert loop.longest_step >= 0.03 and loop.slow_steps == 1
    assert loop.longest_step_what.endswith("slow")


@pytest.mark.timeout(30)
def test_a_stop_asked_for_by_a_flush_does_not_wait_for_the_next_timer(loop):
    # A channel whose flush ends the server (its last connection closed while the server
    # stops gracefully): the turn must not then sleep in select() until a far timer.
    class StopsWhenFlushed:
        closed = False

        def flush(self) -> None:
            loop.stop()

    loop.call_later(3600, lambda: None)  # a timer an hour away: the only thing to wait for
    loop.call_soon(lambda: loop.flush_before_sleep(StopsWhenFlushed()))
    loop.run()  # returns after the turn whose flush asked for the stop
    assert loop.timer_count == 1
