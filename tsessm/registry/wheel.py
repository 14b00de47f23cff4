"""A wheel of the running tsessm, so a logged model carries the code that fitted it.

`log_model` adds the wheel to the pyfunc's artifacts and a requirement pointing at it
(``artifacts/tsessm-<version>+g<hash>-py3-none-any.whl``, relative to the model folder): MLflow's
virtualenv and uv environment managers run ``pip install -r requirements.txt`` from inside the model
folder, so `mlflow models serve --env-manager virtualenv` installs tsessm with the model's other
requirements. ``--env-manager local`` skips pip and uses whatever tsessm is importable.

The wheel is written directly (a zip with the dist-info files of the wheel format), not by a build
backend: the installed package may be editable (a source tree) or a regular install (no
pyproject.toml at hand), building must not write into a source tree others may be editing, and it
must work offline. Its content is the imported ``tsessm`` package folder (every file but
``__pycache__``, hidden and editor files), its metadata the project's: pyproject.toml next to the
package when it is a source tree, else the installed distribution's. The version gets a local label
from the hash of files and metadata (``0.3.0+g1a2b3c4d5e6f``): two wheels of the same name hold the
same bytes, a model says which code fitted it, and wheels are cached by that name under
``$TSESSM_CACHE_DIR/wheels`` (default ``~/.cache/tsessm/wheels``, or ``$XDG_CACHE_HOME/tsessm``), so
logging many models builds once. The zip is reproducible (fixed timestamps and order).
"""
from __future__ import annotations

import base64
import hashlib
import os
import re
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

import tsessm

_SKIP_SUFFIXES = (".pyc", ".pyo", ".swp", ".orig", ".rej", "~")
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
_WHEEL = "Wheel-Version: 1.0\nGenerator: tsessm.registry.wheel\nRoot-Is-Purelib: true\nTag: py3-none-any\n"


def cache_dir() -> Path:
    """Where built wheels are kept: ``$TSESSM_CACHE_DIR/wheels``, else the user cache."""
    root = os.environ.get("TSESSM_CACHE_DIR")
    if root:
        return Path(root) / "wheels"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tsessm" / "wheels"


def tsessm_wheel(directory: str | os.PathLike | None = None) -> Path:
    """The path of a wheel of the running tsessm (built on first call for this code, then cached).

    directory: where to keep it (default `cache_dir()`; a temporary folder when that is not
    writable). The file name carries the source hash, so a cached wheel is never stale.
    """
    package = Path(tsessm.__file__).resolve().parent
    files = _package_files(package)
    meta, entry_points = _metadata()
    digest = hashlib.sha256()
    for rel, path in files:
        digest.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(meta.encode() + b"\0" + entry_points.encode())
    version = f"{_public_version()}+g{digest.hexdigest()[:12]}"
    name = f"tsessm-{version}-py3-none-any.whl"
    target = Path(directory) if directory is not None else cache_dir()
    try:
        target.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=target, prefix=".probe-")
        probe.close()
    except OSError:
        target = Path(tempfile.gettempdir()) / "tsessm-wheels"
        target.mkdir(parents=True, exist_ok=True)
    wheel = target / name
    if wheel.is_file() and zipfile.is_zipfile(wheel):
        return wheel
    fd, tmp = tempfile.mkstemp(dir=target, prefix=".tsessm-", suffix=".whl.part")
    os.close(fd)
    try:
        _write(Path(tmp), files, meta.replace("@VERSION@", version), entry_points, version)
        os.replace(tmp, wheel)  # atomic: a concurrent logger sees the old file or the whole new one
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return wheel


def requirement_names() -> list[str]:
    """The names of tsessm's own (non-extra) requirements, as the wheel declares them."""
    meta, _ = _metadata()
    names = []
    for line in meta.splitlines():
        if line.startswith("Requires-Dist: ") and "extra ==" not in line:
            match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line[len("Requires-Dist: "):])
            if match:
                names.append(match.group(1))
    return names


def _public_version() -> str:
    version = getattr(tsessm, "__version__", None)
    if not version:
        try:
            version = metadata.version("tsessm")
        except metadata.PackageNotFoundError:
            version = "0"
    return version.split("+")[0]


def _package_files(package: Path) -> list[tuple[str, Path]]:
    out = []
    for path in sorted(package.rglob("*")):
        rel = path.relative_to(package.parent)
        if not path.is_file() or any(p == "__pycache__" or p.startswith(".") for p in rel.parts):
            continue
        if path.name.endswith(_SKIP_SUFFIXES):
            continue
        out.append((rel.as_posix(), path))
    return out


def _metadata() -> tuple[str, str]:
    """(METADATA with an @VERSION@ placeholder, entry_points.txt) from pyproject.toml or the install."""
    project = _pyproject()
    if project is not None:
        summary = project.get("description", "")
        requires_python = project.get("requires-python")
        requires = list(project.get("dependencies", []))
        extras = {k: list(v) for k, v in (project.get("optional-dependencies") or {}).items()}
        scripts = dict(project.get("scripts") or {})
    else:
        try:
            installed = metadata.metadata("tsessm")
            summary, requires_python = installed.get("Summary", ""), installed.get("Requires-Python")
            requires, extras = [r for r in (installed.get_all("Requires-Dist") or []) if "extra ==" not in r], {}
            scripts = {e.name: e.value for e in metadata.entry_points(group="console_scripts")
                       if e.value.startswith("tsessm")}
        except metadata.PackageNotFoundError:
            summary, requires_python, requires, extras, scripts = "", None, [], {}, {}
    lines = ["Metadata-Version: 2.1", "Name: tsessm", "Version: @VERSION@"]
    if summary:
        lines.append(f"Summary: {summary}")
    if requires_python:
        lines.append(f"Requires-Python: {requires_python}")
    lines += [f"Requires-Dist: {r}" for r in requires]
    for extra, reqs in sorted(extras.items()):
        lines.append(f"Provides-Extra: {extra}")
        lines += [f"Requires-Dist: {r}; extra == \"{extra}\"" for r in reqs]
    entry_points = ""
    if scripts:
        entry_points = "[console_scripts]\n" + "".join(f"{k} = {v}\n" for k, v in sorted(scripts.items()))
    return "\n".join(lines) + "\n", entry_points


def _pyproject() -> dict | None:
    """The [project] table when tsessm runs from its source tree, else None."""
    path = Path(tsessm.__file__).resolve().parents[1] / "pyproject.toml"
    if not path.is_file():
        return None
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            return None
    try:
        project = tomllib.loads(path.read_text(encoding="utf-8")).get("project", {})
    except (OSError, ValueError):
        return None
    return project if project.get("name") == "tsessm" else None


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def _write(path: Path, files: list[tuple[str, Path]], meta: str, entry_points: str, version: str) -> None:
    dist_info = f"tsessm-{re.sub(r'[^A-Za-z0-9.+]', '_', version)}.dist-info"
    entries = [(rel, p.read_bytes()) for rel, p in files]
    entries.append((f"{dist_info}/METADATA", meta.encode()))
    entries.append((f"{dist_info}/WHEEL", _WHEEL.encode()))
    if entry_points:
        entries.append((f"{dist_info}/entry_points.txt", entry_points.encode()))
    entries.append((f"{dist_info}/top_level.txt", b"tsessm\n"))
    record = "".join(_record_line(n, d) + "\n" for n, d in entries) + f"{dist_info}/RECORD,,\n"
    entries.append((f"{dist_info}/RECORD", record.encode()))
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
