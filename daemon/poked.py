"""PokedThread: a thread that sleeps until someone pokes it (work was committed) or stops it."""

from __future__ import annotations

import threading


class PokedThread(threading.Thread):
    """The checkpointer and the forwarder: woken by the worker's commits, never polling.

    `stop` pokes too, so a thread asleep in `_poked.wait()` wakes and sees `_stopping`. A thread that
    clears `_poked` before its work must check `_stopping` before it sleeps again: a stop that came
    before the clear left no poke to wake on.
    """

    def __init__(self, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self._poked = threading.Event()
        self._stopping = threading.Event()

    def poke(self) -> None:
        """Something was committed: come and see."""
        self._poked.set()

    def stop(self) -> None:
        self._stopping.set()
        self._poked.set()
