"""Model files that hold no code: a zip of one JSON document and numpy arrays.

    tsessm-model.json     {"format": 3, "tsessm": "<version>", "document": <tree>}
    arrays/<n>.npy        every array and tensor of the tree, written and read with allow_pickle=False

The tree is JSON with tagged values for what JSON lacks (arrays, tensors, tuples, timestamps,
pandas indexes, NaN, a few allow-listed dataclasses and polars dtypes). Reading builds nothing
that is not on those lists: no class is imported by a name the file gives, no pickle is loaded
(a pickle is refused unless the caller passes `allow_pickle=True`, see `tsessm.forecasters.base`).
"""
from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import zipfile
from typing import Any

import numpy as np
import pandas as pd
import torch

from tsessm.data import Series
from tsessm.files import atomic_write_bytes

FORMAT = 3
DOCUMENT = "tsessm-model.json"
PICKLE_MAGIC = b"\x80"  # every pickle of protocol 2 or later starts with PROTO
ZIP_MAGIC = b"PK\x03\x04"
MAX_DOCUMENT_BYTES = 64 << 20  # the JSON part; a real model's is a few kilobytes
# Dataclasses a model file may hold, by name; modules that define one add it with `allow`.
_DATACLASSES: dict[str, type] = {"Series": Series}


class ModelFileError(ValueError):
    """A file that is not a readable tsessm model file; the message names the file and why."""


def allow(cls: type) -> type:
    """Let model files hold instances of the dataclass `cls` (by its name). Usable as a decorator."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls.__name__} is not a dataclass")
    _DATACLASSES[cls.__name__] = cls
    return cls


# ----- encoding --------------------------------------------------------------------------------
class _Writer:
    def __init__(self) -> None:
        self.arrays: list[np.ndarray] = []

    def array(self, a: np.ndarray) -> str:
        if a.dtype.hasobject:
            raise TypeError("an object array cannot go into a model file (it would need a pickle)")
        self.arrays.append(np.ascontiguousarray(a))
        return f"arrays/{len(self.arrays) - 1}.npy"

    def encode(self, value: Any) -> Any:
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, (int, np.integer)) and not isinstance(value, np.bool_):
            return int(value)
        if isinstance(value, (float, np.floating)):
            value = float(value)
            return value if math.isfinite(value) else {"__float__": repr(value)}
        if isinstance(value, np.bool_):
            return bool(value)
        if isinstance(value, torch.Tensor):
            return {"__tensor__": self.array(value.detach().cpu().numpy())}
        if isinstance(value, np.ndarray):
            return {"__array__": self.array(value)}
        if isinstance(value, tuple):
            return {"__tuple__": [self.encode(v) for v in value]}
        if isinstance(value, list):
            return [self.encode(v) for v in value]
        if isinstance(value, dict):
            if all(isinstance(k, str) and not k.startswith("__") for k in value):
                return {k: self.encode(v) for k, v in value.items()}
            return {"__map__": [[self.encode(k), self.encode(v)] for k, v in value.items()]}
        if isinstance(value, pd.Timestamp):  # the zone by name: an offset alone loses daylight saving
            return {"__timestamp__": value.isoformat(), "tz": _tz_name(value.tz)}
        if isinstance(value, pd.Timedelta):
            return {"__timedelta__": int(value.value)}
        if isinstance(value, pd.offsets.BaseOffset):  # a frequency ('MS', 'QS-OCT', 'B', 'h'), by its alias
            return {"__offset__": value.freqstr}
        if isinstance(value, pd.Index):
            return {"__index__": self._index(value)}
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            name = type(value).__name__
            if _DATACLASSES.get(name) is not type(value):
                raise TypeError(f"{name} is not allowed in a model file (tsessm.persist.allow)")
            fields = {f.name: self.encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
            return {"__dataclass__": name, "fields": fields}
        polars_dtype = _polars_dtype(value)
        if polars_dtype is not None:
            return {"__polars_dtype__": polars_dtype}
        raise TypeError(f"a {type(value).__name__} cannot go into a model file")

    def _index(self, index: pd.Index) -> dict:
        if isinstance(index, pd.DatetimeIndex):
            return {"type": "datetime", "ns": self.array(index.as_unit("ns").asi8), "tz": _tz_name(index.tz),
                    "unit": index.unit, "name": self.encode(index.name)}
        return {"type": "plain", "values": self.array(index.to_numpy()), "name": self.encode(index.name)}


def _tz_name(tz: Any) -> str | None:
    return None if tz is None else str(tz)


def _polars_dtype(value: Any) -> dict | None:
    """A polars Datetime or Date dtype as plain fields (polars is imported only if it is loaded)."""
    import sys

    pl = sys.modules.get("polars")
    if pl is None:
        return None
    if isinstance(value, pl.Datetime):
        return {"name": "Datetime", "time_unit": value.time_unit, "time_zone": value.time_zone}
    if value is pl.Date or isinstance(value, pl.Date):
        return {"name": "Date"}
    if value is pl.Datetime:
        return {"name": "Datetime", "time_unit": "us", "time_zone": None}
    return None


# ----- decoding --------------------------------------------------------------------------------
class _Reader:
    def __init__(self, archive: zipfile.ZipFile, where: str) -> None:
        self.archive, self.where = archive, where

    def array(self, name: Any) -> np.ndarray:
        if not isinstance(name, str) or not name.startswith("arrays/"):
            raise ModelFileError(f"{self.where}: not a tsessm model file (bad array reference {name!r})")
        try:
            info = self.archive.getinfo(name)
            if info.compress_type != zipfile.ZIP_STORED:  # tsessm stores arrays uncompressed: no zip bombs
                raise ValueError("compressed member")
            data = io.BytesIO(self.archive.read(info))
            version = np.lib.format.read_magic(data)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f"npy format {version}")
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(data)
            if dtype.hasobject or np.prod(shape, dtype=np.int64) * dtype.itemsize > info.file_size:
                raise ValueError(f"header promises {shape} {dtype}, more than the {info.file_size} bytes stored")
            data.seek(0)
            return np.lib.format.read_array(data, allow_pickle=False)
        except (KeyError, ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
            raise ModelFileError(f"{self.where}: not a tsessm model file (array {name}: {exc})") from None

    def decode(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.decode(v) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1 or "__dataclass__" in value or "__timestamp__" in value:
            tag = next(iter(value))
            if tag.startswith("__"):
                return self._tagged(tag, value)
        return {k: self.decode(v) for k, v in value.items()}

    def _tagged(self, tag: str, value: dict) -> Any:
        body = value[tag]
        if tag == "__tensor__":
            return torch.from_numpy(self.array(body))
        if tag == "__array__":
            return self.array(body)
        if tag == "__float__":
            return float(body)
        if tag == "__tuple__":
            return tuple(self.decode(v) for v in body)
        if tag == "__map__":
            return {_hashable(self.decode(k)): self.decode(v) for k, v in body}
        if tag == "__timestamp__":
            stamp = pd.Timestamp(body)
            return stamp.tz_convert(value["tz"]) if value.get("tz") else stamp
        if tag == "__timedelta__":
            return pd.Timedelta(int(body), unit="ns")
        if tag == "__offset__":
            return pd.tseries.frequencies.to_offset(body)
        if tag == "__index__":
            return self._index(body)
        if tag == "__polars_dtype__":
            return _polars_from(body)
        if tag == "__dataclass__":
            cls = _DATACLASSES.get(body)
            if cls is None:
                raise ModelFileError(f"{self.where}: not a tsessm model file (unknown record type {body!r})")
            return cls(**{k: self.decode(v) for k, v in value["fields"].items()})
        raise ModelFileError(f"{self.where}: not a tsessm model file (unknown tag {tag!r})")

    def _index(self, body: dict) -> pd.Index:
        name = self.decode(body.get("name"))
        if body["type"] == "datetime":
            index = pd.DatetimeIndex(self.array(body["ns"]).astype("datetime64[ns]"), name=name)
            if body.get("tz"):
                index = index.tz_localize("UTC").tz_convert(body["tz"])
            return index.as_unit(body.get("unit", "ns"))
        return pd.Index(self.array(body["values"]), name=name)


def _hashable(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key


def _polars_from(body: dict) -> Any:
    import polars as pl

    if body.get("name") == "Datetime":
        return pl.Datetime(time_unit=body.get("time_unit", "us"), time_zone=body.get("time_zone"))
    if body.get("name") == "Date":
        return pl.Date
    raise ModelFileError(f"not a tsessm model file (unknown polars dtype {body!r})")


# ----- files -----------------------------------------------------------------------------------
def dumps(document: dict) -> bytes:
    """The model file's bytes for `document` (a tree of the types `_Writer.encode` takes)."""
    from tsessm import __version__

    writer = _Writer()
    tree = writer.encode(document)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        header = {"format": FORMAT, "tsessm": __version__, "document": tree}
        archive.writestr(DOCUMENT, json.dumps(header, allow_nan=False))
        for i, array in enumerate(writer.arrays):
            out = io.BytesIO()
            np.lib.format.write_array(out, array, allow_pickle=False)
            archive.writestr(f"arrays/{i}.npy", out.getvalue())
    return buffer.getvalue()


def write(path: str | os.PathLike, document: dict) -> None:
    """Write `document` as a model file, atomically."""
    atomic_write_bytes(path, dumps(document))


def read(path: str | os.PathLike, allow_pickle: bool = False) -> dict:
    """The document of a model file. Anything else (a pickle, a damaged or foreign file) raises
    ModelFileError naming the file and what is wrong with it.

    allow_pickle=True also reads the pickled files of tsessm 0.2 and older. Unpickling runs
    whatever code the file holds: only for files whose origin you trust.
    """
    where = str(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except IsADirectoryError:
        raise ModelFileError(f"{where}: not a tsessm model file (a directory)") from None
    if data[:1] == PICKLE_MAGIC:
        if allow_pickle:
            return _legacy_document(data, where)
        raise ModelFileError(
            f"{where}: a pickle (a model file of tsessm 0.2 or older); pickles can run code when loaded, "
            "so tsessm does not read them. If you trust where it came from, load it once with "
            "allow_pickle=True (CLI: --trust-pickle) and save it again"
        )
    if data[:4] != ZIP_MAGIC:
        raise ModelFileError(f"{where}: not a tsessm model file ({'empty' if not data else 'unknown content'})")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        info = archive.getinfo(DOCUMENT)
        if info.compress_type != zipfile.ZIP_STORED or info.file_size > MAX_DOCUMENT_BYTES:
            raise ValueError("the document is compressed or too large")
        header = json.loads(archive.read(info))
    except RecursionError:
        raise ModelFileError(f"{where}: not a tsessm model file (its document is nested too deeply)") from None
    except (zipfile.BadZipFile, KeyError, ValueError, EOFError) as exc:
        raise ModelFileError(f"{where}: not a tsessm model file (damaged: {exc})") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{where}: not a tsessm model file (no header)")
    if header.get("format") != FORMAT or not isinstance(header.get("document"), dict):
        raise ModelFileError(f"{where}: not a tsessm model file (format {header.get('format')!r}, expected {FORMAT})")
    try:
        return _Reader(archive, where).decode(header["document"])
    except ModelFileError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
        raise ModelFileError(f"{where}: not a tsessm model file (damaged document: {exc})") from None


def _legacy_document(data: bytes, where: str) -> dict:
    """A pickled model file of tsessm 0.2 or older, as a document like `read` returns (runs its code)."""
    import pickle

    class CPUUnpickler(pickle.Unpickler):  # tensors saved on a GPU load on the CPU
        def find_class(self, module: str, name: str) -> Any:
            if module == "torch.storage" and name == "_load_from_bytes":
                return lambda b: torch.load(io.BytesIO(b), map_location="cpu", weights_only=True)
            return super().find_class(module, name)

    try:
        payload = CPUUnpickler(io.BytesIO(data)).load()
    except Exception as exc:  # a damaged pickle raises anything
        raise ModelFileError(f"{where}: not a tsessm model file (damaged pickle: {exc!r})") from None
    if not isinstance(payload, dict) or payload.get("format") not in (1, 2) or "class" not in payload:
        raise ModelFileError(f"{where}: not a tsessm model file (a pickle of something else)")
    document = {"class": str(payload["class"]).rsplit(".", 1)[-1], "params": payload["params"],
                "state": payload["state"]}
    if document["class"] == "PanelForecaster":
        inner = CPUUnpickler(io.BytesIO(payload["model"])).load()
        document["model"] = {"class": inner["cls"].__name__, "params": inner["params"], "state": inner["state"]}
    return document
