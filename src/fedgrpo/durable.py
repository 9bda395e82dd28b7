"""Crash-safe files: whole files written atomically, and append-only JSON Lines journals.

Two rules every long-running part of FedGRPO follows, so a SIGKILL at any instant leaves either the
old state or the new one, never a torn one:

- a whole file is written to a temporary sibling, flushed to disk, then renamed over the target
  (`write_atomic`, `write_json_atomic`); readers never see a half-written file;
- a journal only ever grows by whole lines (`Journal.append`); the one line a kill can cut short is
  the last, and `Journal.read` drops it. `Journal.rewrite` replaces the journal atomically (a resumed
  run trimming what came after its checkpoint).

Standard library only: every floor may use it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


def write_atomic(path: str | os.PathLike[str], data: str | bytes, *, sync: bool = True) -> None:
    """Replace `path` with `data` in one step: a temporary sibling, fsync, rename. `sync=False`
    skips the fsync (atomic against a killed process, not against a power cut)."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            if sync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | os.PathLike[str], payload: Any, *, indent: int | None = 2,
                      sync: bool = True) -> None:
    """`payload` as JSON, written atomically (`write_atomic`)."""
    write_atomic(path, json.dumps(payload, indent=indent), sync=sync)


class Journal:
    """An append-only JSON Lines file: one JSON value per line.

    `append` adds whole lines (with `sync`, fsynced before it returns: a record the caller acts on
    after `append` survives a power cut); `read` returns every complete line, dropping a last line
    that a kill cut short; `rewrite` replaces the whole journal atomically."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def read(self) -> list[Any]:
        """Every record, in order; a line that does not parse (the last one, cut short) is dropped."""
        if not self.path.is_file():
            return []
        records = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue  # the line a kill cut short
        return records

    def append(self, records: Iterable[Any], *, sync: bool = False) -> int:
        """Append `records`, one line each; returns how many were written."""
        lines = [json.dumps(r) + "\n" for r in records]
        if not lines:
            return 0
        with self.path.open("a", encoding="utf-8") as fh:
            fh.writelines(lines)
            if sync:
                fh.flush()
                os.fsync(fh.fileno())
        return len(lines)

    def rewrite(self, records: Iterable[Any]) -> None:
        """Replace the journal's content with `records`, atomically."""
        write_atomic(self.path, "".join(json.dumps(r) + "\n" for r in records))

    def keep(self, predicate: Callable[[Any], bool]) -> list[Any]:
        """Trim the journal to the records `predicate` keeps (and drop a cut-short line); returns them."""
        kept = [r for r in self.read() if predicate(r)]
        if self.path.is_file():
            self.rewrite(kept)
        return kept
