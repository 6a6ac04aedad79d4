"""tts-serve's queue: one generation at a time per device, fair across clients, same-model work batched.

Each device has one worker thread and a queue per client. The worker serves clients in turn (the client
served first rotates to the back), and fills the batch with queued work of the same batch key (model and
call settings) from every client in turn, up to ``batch_size`` rows, so requests that arrive together
share one pipeline call. Before a batch that is not full, the worker waits up to ``batch_wait_s`` for
clients of the previous batch that have nothing queued yet (a client sends its next request as soon as it
gets its answer; without the wait, clients answered together would fall into alternate batches). A
request bigger than ``batch_size`` is split into several works. Queued work can be cancelled (a client
that disconnected); work already running finishes and its result is dropped.
"""
from __future__ import annotations

import collections
import concurrent.futures as cf
import dataclasses
import logging
import threading
import time
from typing import Callable

log = logging.getLogger(__name__)
EventFn = Callable[[str, dict], None]


@dataclasses.dataclass(eq=False)
class Work:
    """Rows of one request that go into one pipeline call; ``future`` gets the batch function's result for it."""

    client: str
    key: tuple
    payload: object
    rows: int
    on_event: EventFn = lambda name, data: None
    future: cf.Future = dataclasses.field(default_factory=cf.Future)


@dataclasses.dataclass
class Counters:
    batches: int = 0
    rows: int = 0
    cancelled: int = 0
    failed: int = 0


class DeviceQueue:
    """The fair, batching queue of one device and its worker thread; ``run_batch(works)`` returns one
    result per work (or raises, failing them all)."""

    def __init__(self, name: str, run_batch: Callable[[list[Work]], list], batch_size: int, batch_wait_s: float = 0.0):
        self.name, self.run_batch, self.batch_size, self.batch_wait_s = name, run_batch, batch_size, batch_wait_s
        self.counters = Counters()
        self.busy = False
        self._last_clients: set[str] = set()  # the clients of the batch that ran last
        self._queues: collections.OrderedDict[str, collections.deque[Work]] = collections.OrderedDict()
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._serve, name=f"generate-{name}", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        """Rows waiting (not counting the batch running)."""
        with self._cond:
            return sum(w.rows for q in self._queues.values() for w in q)

    def submit(self, works: list[Work]) -> int:
        """Queue works; returns the rows ahead of them."""
        with self._cond:
            ahead = sum(w.rows for q in self._queues.values() for w in q)
            for w in works:
                self._queues.setdefault(w.client, collections.deque()).append(w)
            self._cond.notify()
        return ahead

    def cancel(self, works: list[Work]) -> int:
        """Drop the works still queued (their futures are cancelled); returns how many were dropped."""
        dropped = 0
        with self._cond:
            for w in works:
                q = self._queues.get(w.client)
                if q is not None and w in q:
                    q.remove(w)
                    w.future.cancel()
                    dropped += 1
                    if not q:
                        del self._queues[w.client]
            self.counters.cancelled += dropped
        return dropped

    def _next_batch(self) -> list[Work]:
        """Under the lock, queues not empty: the first client's oldest work, then same-key works taken from
        every client in turn (one per client per pass) while they fit ``batch_size`` rows."""
        first = next(iter(self._queues))
        key = self._queues[first][0].key
        batch, rows, progress = [], 0, True
        while progress:
            progress = False
            for client in list(self._queues):
                q = self._queues[client]
                work = next((w for w in q if w.key == key), None)
                if work is not None and (not batch or rows + work.rows <= self.batch_size):
                    q.remove(work)
                    batch.append(work)
                    rows += work.rows
                    progress = True
                if not q:
                    del self._queues[client]
        if first in self._queues:
            self._queues.move_to_end(first)
        return batch

    def _wait_for_stragglers(self) -> None:
        """Under the lock, queues not empty: wait (at most ``batch_wait_s``) while the next batch is not full and
        a client of the previous batch has nothing queued."""
        deadline = time.monotonic() + self.batch_wait_s
        while True:
            now = time.monotonic()
            key = next(iter(self._queues.values()))[0].key
            rows = sum(w.rows for q in self._queues.values() for w in q if w.key == key)
            idle = [c for c in self._last_clients if c not in self._queues]
            if now >= deadline or rows >= self.batch_size or not idle:
                return
            self._cond.wait(deadline - now)

    def _serve(self) -> None:
        while True:
            with self._cond:
                while not self._queues:
                    self._cond.wait()
                if self.batch_wait_s:
                    self._wait_for_stragglers()
                batch = self._next_batch()
                batch = [w for w in batch if w.future.set_running_or_notify_cancel()]
                self._last_clients = {w.client for w in batch}
                self.busy = bool(batch)
            if not batch:
                continue
            try:
                results = self.run_batch(batch)
            except BaseException as e:  # noqa: BLE001 - the worker never dies: the batch's requests get the error
                self.counters.failed += 1
                for w in batch:
                    w.future.set_exception(e)
            else:
                self.counters.batches += 1
                self.counters.rows += sum(w.rows for w in batch)
                for w, result in zip(batch, results):
                    w.future.set_result(result)
            finally:
                self.busy = False
