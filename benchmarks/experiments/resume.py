"""Resume from disk: every unit of work (one training run, one timing) is a JSON file of its own.

`RunStore.get(name, config, compute)` returns the result stored under ``<root>/<name>.json`` when
that file was written with the same `config` (compared by a hash stored in the file), else runs
``compute()`` and writes its result (atomically: an interrupted write leaves no half file). A
run interrupted and started again with the same settings therefore redoes only what is missing;
changed settings redo the affected runs, with a message. ``root=None`` stores nothing.

Example:
    >>> store = RunStore(Path("results/standard/runs"))
    >>> run = store.get("exp-1/text/baseline-seed0", {"lr": 5e-5}, lambda: train(...))
    >>> store.computed, store.reused                      # names run now / read from disk
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

__all__ = ["RunStore", "settings_hash"]


def settings_hash(config: dict[str, Any]) -> str:
    """A short stable hash of `config` (JSON with sorted keys)."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class RunStore:
    """Per-run JSON files under `root` (see the module docstring); `computed` / `reused` list names."""

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self.computed: list[str] = []
        self.reused: list[str] = []

    def path(self, name: str) -> Path | None:
        return None if self.root is None else self.root / f"{name}.json"

    def load(self, name: str, config: dict[str, Any]) -> Any | None:
        """The stored result of `name` if it was made with `config`, else None (saying why)."""
        path = self.path(name)
        if path is None or not path.is_file():
            return None
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            tqdm.write(f"{path}: unreadable, running it again")
            return None
        if stored.get("settings_hash") != settings_hash(config):
            tqdm.write(
                f"{path}: made with other settings (hash {stored.get('settings_hash')} != "
                f"{settings_hash(config)}), running it again"
            )
            return None
        return stored["result"]

    def get(self, name: str, config: dict[str, Any], compute: Callable[[], Any]) -> Any:
        """The result of `name` under `config`: from disk when stored with the same config, else computed."""
        result = self.load(name, config)
        if result is not None:
            self.reused.append(name)
            return result
        result = json.loads(json.dumps(compute(), default=str))  # the same types as when read back
        self.computed.append(name)
        path = self.path(name)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            body = {"settings_hash": settings_hash(config), "settings": config, "result": result}
            tmp.write_text(json.dumps(body, indent=1, default=str), encoding="utf-8")
            os.replace(tmp, path)
        return result
