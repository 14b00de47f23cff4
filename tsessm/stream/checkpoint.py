"""Checkpoints: the model with its state, the input position and the counters, consistently.

A checkpoint directory holds `model-<seq>.pkl` files and one manifest, `checkpoint.json`.
Writing one: the model goes to a new `model-<seq>.pkl` (atomically), then the manifest that
names it replaces the old one atomically -- the manifest is the commit point. A crash before
the rename leaves the previous manifest and the model file it names intact; model files no
manifest names are removed after the next commit. Attachments (e.g. the buffer of recent
observations kept for model reloads, `<key>-<seq>.bin`) are written and cleaned up the same way.
"""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

MANIFEST = "checkpoint.json"
FORMAT = "tsessm-stream-checkpoint/1"
_ATTACHMENT = re.compile(r"^[a-z][a-z0-9_]*-\d{8}\.bin$")


class CheckpointError(Exception):
    """The checkpoint directory cannot be used (unreadable, foreign or damaged)."""


class CheckpointStore:
    def __init__(self, directory: str | os.PathLike) -> None:
        self.dir = Path(directory)
        if self.dir.exists() and not self.dir.is_dir():
            raise CheckpointError(f"--checkpoint {self.dir} exists and is not a directory")
        self.manifest_path = self.dir / MANIFEST

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def read(self) -> dict:
        """The manifest, checked; `manifest["model_path"]` is the model file's full path."""
        try:
            manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise CheckpointError(f"unreadable checkpoint {self.manifest_path}: {exc}") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise CheckpointError(f"{self.manifest_path} is not a tsessm stream checkpoint (format {FORMAT})")
        for key in ("model_file", "adapter", "position", "counters", "series", "seq"):
            if key not in manifest:
                raise CheckpointError(f"damaged checkpoint {self.manifest_path}: no {key!r}")
        model_path = self.dir / manifest["model_file"]
        if not model_path.is_file():
            raise CheckpointError(f"damaged checkpoint {self.manifest_path}: its model file {model_path} is missing")
        manifest["model_path"] = model_path
        attachments = manifest.get("attachments") or {}
        if not isinstance(attachments, dict):
            raise CheckpointError(f"damaged checkpoint {self.manifest_path}: bad 'attachments'")
        manifest["attachment_paths"] = {}
        for key, name in attachments.items():
            path = self.dir / str(name)
            if not path.is_file():
                raise CheckpointError(f"damaged checkpoint {self.manifest_path}: its {key} file {path} is missing")
            manifest["attachment_paths"][key] = path
        return manifest

    def write(self, adapter: Any, adapter_class: str, state: dict[str, Any], seq: int,
              attachments: dict[str, bytes] | None = None) -> None:
        """Commit a checkpoint: model file (and attachments) first, then the manifest naming them."""
        from tsessm.forecasters.base import atomic_write_bytes

        self.dir.mkdir(parents=True, exist_ok=True)
        names = {}
        for key, payload in (attachments or {}).items():
            names[key] = f"{key}-{seq:08d}.bin"
            atomic_write_bytes(self.dir / names[key], payload)
        model_file = f"model-{seq:08d}.pkl"
        extras = adapter.save(self.dir / model_file) or {}
        manifest = {
            "format": FORMAT,
            "seq": seq,
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "model_file": model_file,
            "adapter": adapter_class,
            "adapter_extras": extras,
            **state,
        }
        if names:
            manifest["attachments"] = names
        atomic_write_bytes(self.manifest_path, (json.dumps(manifest, indent=1) + "\n").encode("utf-8"))
        _fsync_dir(self.dir)
        for old in [*self.dir.glob("model-*.pkl"), *self.dir.glob(".model-*.tmp")]:
            if old.name != model_file:
                old.unlink(missing_ok=True)
        for old in [*self.dir.glob("*-*.bin"), *self.dir.glob(".*-*.bin.*.tmp")]:
            base = old.name.lstrip(".").split(".bin")[0] + ".bin"
            if _ATTACHMENT.match(base) and old.name not in names.values():
                old.unlink(missing_ok=True)

    def lock(self) -> None:
        """Hold the directory for this process (released at exit, also on kill -9)."""
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.dir / "lock", "a")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock_file.close()
            raise CheckpointError(f"--checkpoint {self.dir} is in use by another running stream") from None

    def unlock(self) -> None:
        lock_file = getattr(self, "_lock_file", None)
        if lock_file is not None:
            lock_file.close()  # closing releases the flock
            self._lock_file = None


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
