"""Progress reporting as an injected sink, so library code never imports a UI library.

The CLI passes a rich-backed sink; library callers get :class:`NullProgress`, which does nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol


class ProgressSink(Protocol):
    def phase(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        """Context manager yielding `advance(n)` for one long phase."""
        ...

    def log(self, message: str) -> None: ...


class NullProgress:
    @contextmanager
    def phase(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        yield lambda n=1: None

    def log(self, message: str) -> None:
        pass
