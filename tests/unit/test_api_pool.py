"""capsa.Pool's hand-over of idle sandboxes to asyncio tasks (Pool._atake), without containers:
the pool's queue and waiters alone, the sandboxes plain objects."""

from __future__ import annotations

import asyncio
import collections
import queue
import threading
import time

from capsa.api.pool import Pool


def bare_pool() -> Pool:
    """A Pool with its hand-over state only (no sandbox is made: nothing else is used here)."""
    pool = Pool.__new__(Pool)
    pool._idle = queue.Queue()
    pool._async_waiters = collections.deque()
    pool._lock = threading.Condition()
    pool._closed = False
    pool._failure = None
    pool._all = set()
    pool._count = 0
    return pool


class FakeSandbox:
    discarded = False

    def discard(self) -> None:
        self.discarded = True


def test_a_sandbox_handed_over_as_the_waiting_task_rechecks_is_not_lost():
    """A sandbox given back (_put_idle) in the same turn of the event loop as the waiting task's
    periodic re-check (every 0.5 s, to see the pool closed or failing) must reach that task or
    the queue. It was lost once: delivered to a future the task had just stopped waiting for,
    it stayed out of the pool for good (a pool of 4 serving 50 runs hung under cgroup v2 in a
    slow guest, where the window is wide, and its close left the lost sandbox's container)."""
    pool = bare_pool()
    sandbox = object()

    async def main():
        loop = asyncio.get_running_loop()
        taking = asyncio.create_task(pool._atake())
        await asyncio.sleep(0)  # the task waits now: its re-check is due before `after` + 0.5
        after = loop.time()
        # Due just after the re-check; the loop, held past both, runs them in one turn, in order.
        loop.call_at(after + 0.55, pool._put_idle, sandbox)
        loop.call_soon(time.sleep, 0.8)
        try:
            return await asyncio.wait_for(taking, 10)
        except TimeoutError:
            return None

    assert asyncio.run(main()) is sandbox
    assert pool._idle.empty() and not pool._async_waiters


def test_a_task_cancelled_as_a_sandbox_reaches_it_gives_the_sandbox_back():
    pool = bare_pool()
    sandbox = object()

    async def main():
        taking = asyncio.create_task(pool._atake())
        await asyncio.sleep(0)
        pool._put_idle(sandbox)  # its delivery is scheduled on the loop...
        taking.cancel()  # ...and the task is cancelled before it runs
        try:
            await taking
        except asyncio.CancelledError:
            pass
        await asyncio.sleep(0.01)

    asyncio.run(main())
    assert pool._idle.get_nowait() is sandbox and not pool._async_waiters


def test_idle_sandboxes_go_to_waiting_tasks_first_and_each_to_one():
    pool = bare_pool()
    sandboxes = [object() for _ in range(3)]

    async def main():
        takers = [asyncio.create_task(pool._atake()) for _ in range(5)]
        await asyncio.sleep(0)
        for sandbox in sandboxes:
            pool._put_idle(sandbox)
        for _ in range(500):
            if sum(task.done() for task in takers) == len(sandboxes):
                break
            await asyncio.sleep(0.01)
        done = [task for task in takers if task.done()]
        pending = [task for task in takers if not task.done()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        return [task.result() for task in done]

    taken = asyncio.run(main())
    assert sorted(map(id, taken)) == sorted(map(id, sandboxes))
    assert pool._idle.empty()


def test_a_sandbox_given_back_after_close_is_deleted_not_queued():
    """close() empties the queue once: a sandbox put back later (delivered to a task that had
    stopped waiting, as the pool closed) would stay, its container with it."""
    pool = bare_pool()
    sandbox = FakeSandbox()
    pool._all.add(sandbox)
    pool._count = 1
    pool._closed = True
    pool._put_idle(sandbox)
    assert sandbox.discarded and pool._idle.empty() and not pool._all
