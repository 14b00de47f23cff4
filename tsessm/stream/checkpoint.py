"""Checkpoints: the model with its state, the input position and the counters, consistently.

A checkpoint directory holds `model-<seq>.tsm` files (model files: JSON and arrays, no code) and
one manifest, `checkpoint.json`. Writing one: the model goes to a new `model-<seq>.tsm`
(atomically), then the manifest that names it (and its sha256) replaces the old one atomically --
the manifest is the commit point. Reading one trusts nothing in it: every field is type-checked,
file names must be plain names inside the directory, the model file must match its sha256. A crash before
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

from filelock import FileLock, Timeout

from tsessm.files import atomic_write_bytes, sha256_file

MANIFEST = "checkpoint.json"
FORMAT = "tsessm-stream-checkpoint/2"
_ATTACHMENT = re.compile(r"^[a-z][a-z0-9_]*-\d{8}\.bin$")
_MODEL_FILE = re.compile(r"^model-\d{8}\.tsm$")
# manifest field -> the JSON types it must have
_FIELD_TYPES = {"seq": int, "model_file": str, "model_sha256": str, "adapter": str, "position": dict,
                "counters": dict, "series": list}


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

    @classmethod
    def open_locked(cls, directory: str | os.PathLike | None) -> tuple["CheckpointStore | None", dict | None]:
        """(the store of `directory`, locked, and its manifest or None when it holds none yet);
        (None, None) for no directory. Raises CheckpointError (the lock released)."""
        if directory is None:
            return None, None
        store = cls(directory)
        store.lock()
        try:
            return store, store.read() if store.exists() else None
        except BaseException:
            store.unlock()
            raise

    def read(self) -> dict:
        """The manifest, checked; `manifest["model_path"]` is the model file's full path."""
        try:
            manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise CheckpointError(f"unreadable checkpoint {self.manifest_path}: {exc}") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise CheckpointError(f"{self.manifest_path} is not a tsessm stream checkpoint (format {FORMAT})")
        self._check_fields(manifest)
        model_path = self.dir / manifest["model_file"]
        if not model_path.is_file():
            raise CheckpointError(f"damaged checkpoint {self.manifest_path}: its model file {model_path} is missing")
        if sha256_file(model_path) != manifest["model_sha256"]:
            raise CheckpointError(f"damaged checkpoint {self.manifest_path}: {model_path} is not the model file it "
                                  "recorded (sha256 differs)")
        manifest["model_path"] = model_path
        manifest["attachment_paths"] = {}
        for key, name in (manifest.get("attachments") or {}).items():
            path = self.dir / name
            if not path.is_file():
                raise CheckpointError(f"damaged checkpoint {self.manifest_path}: its {key} file {path} is missing")
            manifest["attachment_paths"][key] = path
        return manifest

    def _check_fields(self, manifest: dict) -> None:
        """Every field the runner reads, with its type; file names plain names of this directory."""
        def bad(what: str) -> CheckpointError:
            return CheckpointError(f"damaged checkpoint {self.manifest_path}: {what}")

        for key, kind in _FIELD_TYPES.items():
            if key not in manifest:
                raise bad(f"no {key!r}")
            if not isinstance(manifest[key], kind) or isinstance(manifest[key], bool):
                raise bad(f"{key!r} must be a {kind.__name__}, got {manifest[key]!r}")
        if not _MODEL_FILE.fullmatch(manifest["model_file"]):
            raise bad(f"model file {manifest['model_file']!r} is not a model-<seq>.tsm name in the checkpoint folder")
        position = manifest["position"]
        if not isinstance(position.get("line"), int) or isinstance(position.get("line"), bool):
            raise bad(f"position line must be an integer, got {position.get('line')!r}")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in manifest["counters"].values()):
            raise bad("counters must be integers")
        for entry in manifest["series"]:
            if not isinstance(entry, dict) or not isinstance(entry.get("count"), int) or "id" not in entry:
                raise bad(f"series entries need an id and an integer count, got {entry!r}")
            if entry["id"] is not None and (isinstance(entry["id"], bool) or not isinstance(entry["id"], (str, int))):
                raise bad(f"a series id must be a string, an integer or null, got {entry['id']!r}")
            last = entry.get("last_values")
            if last is not None and not (isinstance(last, list) and all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in last)):
                raise bad(f"series {entry['id']!r}: last_values must be a list of numbers")
        extras = manifest.get("adapter_extras", {})
        if not isinstance(extras, dict):
            raise bad("'adapter_extras' must be an object")
        attachments = manifest.get("attachments") or {}
        if not isinstance(attachments, dict) or not all(
                isinstance(n, str) and _ATTACHMENT.fullmatch(n) for n in attachments.values()):
            raise bad("attachments must be <key>-<seq>.bin names in the checkpoint folder")
        for key in ("model_source",):
            if manifest.get(key) is not None and not isinstance(manifest[key], str):
                raise bad(f"{key!r} must be a string")
        version = manifest.get("model_version")
        if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
            raise bad("'model_version' must be an integer")

    def write(self, adapter: Any, adapter_class: str, state: dict[str, Any], seq: int,
              attachments: dict[str, bytes] | None = None) -> None:
        """Commit a checkpoint: model file (and attachments) first, then the manifest naming them."""
        self.dir.mkdir(parents=True, exist_ok=True)
        names = {}
        for key, payload in (attachments or {}).items():
            names[key] = f"{key}-{seq:08d}.bin"
            atomic_write_bytes(self.dir / names[key], payload)
        model_file = f"model-{seq:08d}.tsm"
        extras = adapter.save(self.dir / model_file) or {}
        manifest = {
            "format": FORMAT,
            "seq": seq,
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "model_file": model_file,
            "model_sha256": sha256_file(self.dir / model_file),
            "adapter": adapter_class,
            "adapter_extras": extras,
            **state,
        }
        if names:
            manifest["attachments"] = names
        atomic_write_bytes(self.manifest_path, (json.dumps(manifest, indent=1, allow_nan=False) + "\n").encode("utf-8"))
        _fsync_dir(self.dir)
        for old in [*self.dir.glob("model-*.tsm"), *self.dir.glob(".model-*.tmp")]:
            if old.name != model_file:
                old.unlink(missing_ok=True)
        for old in [*self.dir.glob("*-*.bin"), *self.dir.glob(".*-*.bin.*.tmp")]:
            base = old.name.lstrip(".").split(".bin")[0] + ".bin"
            if _ATTACHMENT.match(base) and old.name not in names.values():
                old.unlink(missing_ok=True)

    def lock(self) -> None:
        """Hold the directory for this process (an OS lock: released at exit, also on kill -9)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(self.dir / "lock")
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise CheckpointError(f"--checkpoint {self.dir} is in use by another running stream") from None

    def unlock(self) -> None:
        lock = getattr(self, "_lock", None)
        if lock is not None:
            lock.release()
            self._lock = None


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
