"""A background producer for an iterator, so reading and preparing the next chunk overlaps
scoring this one."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from queue import Full, Queue
from typing import TypeVar

T = TypeVar("T")


def prefetched(items: Iterator[T], depth: int = 2) -> Iterator[T]:
    """`items`, produced up to `depth` ahead by a background thread, so reading and preparing
    the next chunk overlaps scoring this one. An error in the producer is raised here, in order."""
    queue: Queue = Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def offer(entry: tuple) -> bool:
        """Queue `entry` unless the consumer has gone (then no put may block for ever)."""
        while not stop.is_set():
            try:
                queue.put(entry, timeout=0.1)
                return True
            except Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer((item, None)):
                    return
            offer((done, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            offer((done, exc))
        finally:
            getattr(items, "close", lambda: None)()  # a nested prefetch stops its own thread now

    thread = threading.Thread(target=produce, name="vad-read", daemon=True)
    thread.start()
    try:
        while True:
            item, error = queue.get()
            if item is done:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        thread.join()
