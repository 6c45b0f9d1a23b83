"""Overlap for iterators of chunks: a background producer, so reading and preparing the next
chunk overlaps scoring this one; and an ordered map, so several chunks are scored at once."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from queue import Full, Queue
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


_DONE = object()  # the producer's last entry: (_DONE, None), or (_DONE, its error)


def _offer(queue: Queue, stop: threading.Event, entry: tuple) -> bool:
    """Queue `entry` unless the consumer has gone (then no put may block for ever)."""
    while not stop.is_set():
        try:
            queue.put(entry, timeout=0.1)
            return True
        except Full:
            continue
    return False


def _produce(items: Iterator[T], queue: Queue, stop: threading.Event) -> None:
    """Move `items` into `queue` until they end, fail or the consumer goes."""
    try:
        for item in items:
            if not _offer(queue, stop, (item, None)):
                return
        _offer(queue, stop, (_DONE, None))
    except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
        _offer(queue, stop, (_DONE, exc))
    finally:
        getattr(items, "close", lambda: None)()  # a nested prefetch stops its own thread now


def prefetched(items: Iterator[T], depth: int = 2) -> Iterator[T]:
    """`items`, produced up to `depth` ahead by a background thread, so reading and preparing
    the next chunk overlaps scoring this one. An error in the producer is raised here, in order."""
    queue: Queue = Queue(maxsize=depth)
    stop = threading.Event()
    thread = threading.Thread(target=_produce, args=(items, queue, stop), name="vad-read", daemon=True)
    thread.start()
    try:
        while True:
            item, error = queue.get()
            if item is _DONE:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        thread.join()


def in_order(function: Callable[[T], R], items: Iterator[T], workers: int) -> Iterator[R]:
    """`function` of each item, up to `workers` items at once on threads, yielded in the items'
    order; no more than `workers` results are held (memory stays a few chunks). One chunk at a
    time left cores idle at each chunk's end, while its last kernel calls and its columns were
    finished (bench/NOTES.md, 2026-12-02, session 11). An error is raised in order."""
    if workers <= 1:
        yield from map(function, items)
        return
    pending: deque[Future[R]] = deque()
    with ThreadPoolExecutor(workers, thread_name_prefix="vad-chunk") as pool:
        try:
            for item in items:
                pending.append(pool.submit(function, item))
                if len(pending) >= workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:  # the consumer left early (an error): nothing more is started
                future.cancel()
