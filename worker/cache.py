"""What a warm worker process keeps between jobs: tokenized data and pristine pretrained weights.

Keys are built from content (the data files' SHA-256, the model folder's files with their sizes
and modification times, the tokenizer and max length), so a changed file is a miss, never a
stale hit. Weights are copied right after loading, before training can touch them; every job
gets a newly built model holding those values, and its own freshly initialised head. Hub
models and hub datasets are not cached: nothing local says when they change.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any, Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Lru(Generic[K, V]):
    def __init__(self, entries: int) -> None:
        self.entries = entries
        self.items: OrderedDict[K, V] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.entries > 0

    def get(self, key: K) -> V | None:
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        return None

    def pop(self, key: K) -> V | None:
        """Take an entry out (a warm model is its job's alone while the job runs)."""
        return self.items.pop(key, None)

    def put(self, key: K, value: V) -> None:
        if not self.enabled:
            return
        self.items[key] = value
        self.items.move_to_end(key)
        while len(self.items) > self.entries:
            self.items.popitem(last=False)

    def resize(self, entries: int) -> None:
        self.entries = entries
        while len(self.items) > max(entries, 0):
            self.items.popitem(last=False)


def folder_identity(folder: str) -> tuple[tuple[str, int, int], ...] | None:
    """Every file of a local model folder with its size and mtime; None for a hub id."""
    root = Path(folder)
    if not root.is_dir():
        return None
    return tuple(
        (str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    )


# One of each per worker process, sized by FINETUNE_WORKER_CACHE_ENTRIES.
tokenized_data: Lru[tuple[Any, ...], Any] = Lru(4)
pretrained: Lru[tuple[Any, ...], Any] = Lru(4)


def configure(entries: int) -> None:
    tokenized_data.resize(entries)
    pretrained.resize(entries)
