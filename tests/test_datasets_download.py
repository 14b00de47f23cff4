"""Benchmark files that download on first use, against a file server on 127.0.0.1 (never the
internet): checksums, refused corrupted and truncated downloads, the URL override, offline use,
the search path first, and ECL's checksum recorded at the first download."""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.server
import json
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tsessm import datasets as D

SHARED = Path(D.__file__).resolve().parents[1].parent / "shared" / "datasets"
ETTH1 = gzip.decompress((SHARED / "ETTh1.csv.gz").read_bytes())


class FileServer:
    """Serves `files` (URL path -> bytes) over HTTP on 127.0.0.1; records every request path.
    Paths in `truncate` announce the full Content-Length but send half the bytes and close."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.truncate: set[str] = set()
        self.seen: list[str] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the http.server interface
                owner.seen.append(self.path)
                body = owner.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if self.path in owner.truncate else body)
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def server():
    s = FileServer()
    yield s
    s.stop()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """Downloads allowed, into a fresh cache; the search path holds nothing but that cache."""
    folder = tmp_path / "cache" / "datasets"
    monkeypatch.setenv(D.CACHE_ENV_VAR, str(tmp_path / "cache"))
    monkeypatch.delenv(D.DATA_CACHE_ENV_VAR, raising=False)
    monkeypatch.delenv(D.OFFLINE_ENV_VAR, raising=False)
    monkeypatch.delenv(D.URL_ENV_VAR, raising=False)
    monkeypatch.delenv(D.ENV_VAR, raising=False)
    empty = tmp_path / "nothing-here"
    monkeypatch.setattr(D, "search_dirs", lambda data_dir=None: [
        *([Path(data_dir)] if data_dir is not None else []), empty, D.cache_dir()])
    return folder


def leftovers(folder: Path) -> list[str]:
    """What a refused download left in the cache (the lock files aside): must be nothing."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock")) if folder.exists() else []


def lstnet_matrix(rows: int) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 5000, size=(rows, 321)).astype(float)


def small_ecl(monkeypatch, rows: int, url: str | None = None) -> None:
    """ECL's registry entry shrunk to `rows` rows (the real file has 26304), its source at `url`."""
    spec = D.DATASETS["ECL"]
    monkeypatch.setitem(D.DATASETS, "ECL", dataclasses.replace(spec, n_rows=rows, url=url or spec.url))


# ------------------------------------------------------------------- the registered files


def test_download_verifies_caches_and_then_works_offline(server, cache):
    server.files["/ETTh1.csv"] = ETTH1
    df = D.load("ETTh1", base_url=server.url)
    assert server.seen == ["/ETTh1.csv"]
    assert (cache / "ETTh1.csv").read_bytes() == ETTH1
    assert hashlib.sha256((cache / "ETTh1.csv").read_bytes()).hexdigest() == D.get_spec("ETTh1").sha256
    pd.testing.assert_frame_equal(df, D.load("ETTh1", data_dir=SHARED))
    assert df.shape == (17420, 7)
    D.load("ETTh1", base_url=server.url)
    assert server.seen == ["/ETTh1.csv"]  # the cached file is used: no second request
    server.stop()
    pd.testing.assert_frame_equal(D.load("ETTh1"), df)  # server gone: the cache still serves
    pd.testing.assert_frame_equal(D.load("ETTh1", download=False), df)
    assert leftovers(cache) == ["ETTh1.csv"]  # no staging folder left behind


def test_mirror_from_the_environment_falls_back_to_gz(server, cache, monkeypatch):
    server.files["/mirror/weather.csv.gz"] = (SHARED / "weather.csv.gz").read_bytes()
    monkeypatch.setenv(D.URL_ENV_VAR, server.url + "/mirror/")
    df = D.load("weather")
    assert server.seen == ["/mirror/weather.csv", "/mirror/weather.csv.gz"]  # 404, then the gzip
    assert leftovers(cache) == ["weather.csv.gz"]
    assert df.shape == (52696, 21) and df.columns[-1] == "OT"


def test_the_registry_url_is_the_default_source(server, cache, monkeypatch):
    spec = D.DATASETS["ETTh1"]
    assert spec.url.startswith("https://raw.githubusercontent.com/zhouhaoyi/ETDataset/")
    monkeypatch.setitem(D.DATASETS, "ETTh1", dataclasses.replace(spec, url=server.url + "/ETT-small/ETTh1.csv"))
    server.files["/ETT-small/ETTh1.csv"] = ETTH1
    path = D.fetch("ETTh1")
    assert path == cache / "ETTh1.csv" and server.seen == ["/ETT-small/ETTh1.csv"]
    assert D.fetch("ETTh1") == path and len(server.seen) == 1
    D.fetch("ETTh1", force=True)
    assert len(server.seen) == 2


def test_every_registered_file_has_a_public_source():
    for spec in D.DATASETS.values():
        assert spec.url and spec.url.startswith("https://"), spec.name
        assert (spec.sha256 is None) == (spec.name == "ECL")


def test_a_corrupted_download_is_refused_and_removed(server, cache):
    server.files["/ETTh1.csv"] = ETTH1.replace(b"5.827000141143799", b"5.9", 1)
    with pytest.raises(ValueError, match="checksum.*refused and removed"):
        D.load("ETTh1", base_url=server.url)
    assert leftovers(cache) == []
    server.files["/weather.csv.gz"] = gzip.compress(b"date,OT\n2020-01-01 00:10:00,1.0\n")
    with pytest.raises(ValueError, match="sha256.*refused and removed"):
        D.load("weather", base_url=server.url)
    assert leftovers(cache) == []
    server.files["/ETTh1.csv"] = ETTH1  # a later good download goes through
    assert D.load("ETTh1", base_url=server.url).shape == (17420, 7)


def test_a_partial_download_is_refused_and_removed(server, cache):
    server.files["/ETTh1.csv"] = ETTH1
    server.truncate.add("/ETTh1.csv")  # the connection closes after half the announced length
    with pytest.raises(D.DownloadError, match="incomplete download") as err:
        D.load("ETTh1", base_url=server.url)
    assert "Folders searched" in str(err.value) and D.URL_ENV_VAR in str(err.value)
    assert leftovers(cache) == []
    # a gzip cut short but served with a matching length: the decompression refuses it
    server.files["/weather.csv.gz"] = (SHARED / "weather.csv.gz").read_bytes()[:5000]
    with pytest.raises(ValueError, match="not a complete gzip"):
        D.load("weather", base_url=server.url)
    assert leftovers(cache) == []


def test_http_errors_and_unreachable_hosts_raise_download_errors(server, cache):
    with pytest.raises(D.DownloadError, match="404") as err:
        D.load("ETTh1", base_url=server.url + "/empty")
    assert server.url + "/empty/ETTh1.csv.gz" in str(err.value)
    assert issubclass(D.DownloadError, FileNotFoundError)  # callers that skip missing data skip it too
    url = server.url
    server.stop()
    with pytest.raises(D.DownloadError, match="ConnectionError"):
        D.load("ETTh1", base_url=url)
    assert leftovers(cache) == []


# ------------------------------------------------------------------- no network when not needed


def test_a_file_on_the_search_path_wins_without_network(server, cache, tmp_path, monkeypatch):
    given = tmp_path / "given"
    given.mkdir()
    (given / "ETTh1.csv").write_bytes(ETTH1)
    server.files["/ETTh1.csv"] = ETTH1
    monkeypatch.setenv(D.URL_ENV_VAR, server.url)
    assert D.load("ETTh1", data_dir=given).shape == (17420, 7)
    assert server.seen == [] and leftovers(cache) == []


def test_the_real_search_path_comes_before_the_cache(server, tmp_path, monkeypatch):
    monkeypatch.setenv(D.CACHE_ENV_VAR, str(tmp_path / "cache"))
    monkeypatch.delenv(D.DATA_CACHE_ENV_VAR, raising=False)
    monkeypatch.delenv(D.OFFLINE_ENV_VAR, raising=False)
    monkeypatch.delenv(D.ENV_VAR, raising=False)
    monkeypatch.setenv(D.URL_ENV_VAR, server.url)
    assert D.search_dirs()[-1] == tmp_path / "cache" / "datasets" == D.cache_dir()
    assert D.search_dirs()[-2] == SHARED
    assert D.load("ETTm1").shape == (69680, 7)  # from ../shared/datasets
    assert server.seen == [] and not (tmp_path / "cache").exists()


def test_downloads_can_be_switched_off(server, cache, monkeypatch):
    server.files["/ETTh1.csv"] = ETTH1
    with pytest.raises(FileNotFoundError, match="downloads are off") as err:
        D.load("ETTh1", base_url=server.url, download=False)
    assert not isinstance(err.value, D.DownloadError)
    monkeypatch.setenv(D.OFFLINE_ENV_VAR, "1")
    with pytest.raises(FileNotFoundError, match="TSESSM_OFFLINE=1") as err:
        D.load("ETTh1", base_url=server.url)
    message = str(err.value)
    assert "--data-dir" in message and D.URL_ENV_VAR in message and str(cache) in message
    monkeypatch.setenv(D.DATA_CACHE_ENV_VAR, str(cache.parent / "own"))
    assert D.cache_dir() == cache.parent / "own"
    monkeypatch.delenv(D.DATA_CACHE_ENV_VAR)
    assert f"from the mirror {server.url} into" in message
    with pytest.raises(FileNotFoundError) as err:
        D.load("ETTh1")
    assert f"from {D.get_spec('ETTh1').url} into" in str(err.value)
    assert server.seen == []
    assert D.load("ETTh1", base_url=server.url, download=True).shape == (17420, 7)  # the argument wins


# ------------------------------------------------------------------- ECL


def test_ecl_from_the_lstnet_matrix_records_its_checksum_and_checks_it(server, cache, monkeypatch):
    matrix = lstnet_matrix(48)
    served = gzip.compress("\n".join(",".join(f"{v:.1f}" for v in row) for row in matrix).encode() + b"\n")
    server.files["/electricity/electricity.txt.gz"] = served
    small_ecl(monkeypatch, 48, server.url + "/electricity/electricity.txt.gz")
    df = D.load("ECL")
    assert df.shape == (48, 321) and list(df.columns) == [f"MT_{i:03d}" for i in range(321)]
    assert df.columns[-1] == D.target("ECL")
    assert df.index[0] == pd.Timestamp("2012-01-01 00:00") and df.index[-1] == pd.Timestamp("2012-01-02 23:00")
    np.testing.assert_array_equal(df.to_numpy(), matrix)
    assert leftovers(cache) == ["ECL.csv", "ECL.csv.json"]
    record = json.loads((cache / "ECL.csv.json").read_text())
    assert record["sha256"] == hashlib.sha256((cache / "ECL.csv").read_bytes()).hexdigest()
    assert record["source_sha256"] == hashlib.sha256(served).hexdigest()
    assert record["source"].endswith("/electricity/electricity.txt.gz") and record["converted"]
    D.load("ECL")
    assert len(server.seen) == 1  # the second load reads the cache
    text = (cache / "ECL.csv").read_bytes()
    (cache / "ECL.csv").write_bytes(text.replace(b"\n2012-01-01 05:00:00,", b"\n2012-01-01 05:00:00,1", 1))
    with pytest.raises(ValueError, match="recorded") as err:
        D.load("ECL")
    assert record["sha256"] in str(err.value) and "ECL.csv.json" in str(err.value)
    assert D.load("ECL", verify=False).shape == (48, 321)
    assert len(server.seen) == 1


def test_ecl_from_a_mirror_in_the_informer_layout(server, cache, monkeypatch):
    small_ecl(monkeypatch, 24)
    frame = pd.DataFrame(lstnet_matrix(24), columns=[f"MT_{i:03d}" for i in range(321)])
    frame.insert(0, "date", pd.date_range("2012-01-01", periods=24, freq="h").strftime("%Y-%m-%d %H:%M:%S"))
    server.files["/ECL.csv"] = frame.to_csv(index=False).encode()
    df = D.load("ECL", base_url=server.url)
    assert df.shape == (24, 321) and server.seen == ["/ECL.csv"]
    record = json.loads((cache / "ECL.csv.json").read_text())
    assert record["converted"] is None and record["sha256"] == hashlib.sha256(server.files["/ECL.csv"]).hexdigest()
    # the mirror now serves only a gzip: a forced download replaces the file and its record
    served = gzip.compress(server.files.pop("/ECL.csv"))
    server.files["/ECL.csv.gz"] = served
    assert D.fetch("ECL", base_url=server.url, force=True) == cache / "ECL.csv.gz"
    assert leftovers(cache) == ["ECL.csv.gz", "ECL.csv.gz.json"]
    record = json.loads((cache / "ECL.csv.gz.json").read_text())
    assert record["sha256"] == hashlib.sha256(gzip.decompress(served)).hexdigest()  # of the CSV
    assert record["source_sha256"] == hashlib.sha256(served).hexdigest()  # of the bytes served
    pd.testing.assert_frame_equal(D.load("ECL"), df)


def test_ecl_of_the_wrong_shape_is_refused_and_nothing_recorded(server, cache, monkeypatch):
    small_ecl(monkeypatch, 48, server.url + "/electricity.txt.gz")
    server.files["/electricity.txt.gz"] = gzip.compress(b"1.0,2.0\n" * 48)
    with pytest.raises(ValueError, match=r"shape \(48, 2\).*refused and removed"):
        D.load("ECL")
    server.files["/electricity.txt.gz"] = gzip.compress(b",".join([b"1.0"] * 321) * 47)
    with pytest.raises(ValueError, match="refused and removed"):
        D.load("ECL")
    server.files["/ECL.csv"] = b"date,MT_320\n2012-01-01 00:00:00,1.0\n"  # a mirror with too few columns
    with pytest.raises(ValueError, match="expected 48 x 322"):
        D.load("ECL", base_url=server.url)
    assert leftovers(cache) == []


def test_convert_lstnet_electricity():
    matrix = lstnet_matrix(30)
    raw = "\n".join(",".join(repr(float(v)) for v in row) for row in matrix).encode()
    out = D.convert_lstnet_electricity(raw, n_rows=30)
    assert out == D.convert_lstnet_electricity(gzip.compress(raw), n_rows=30)  # gzip or plain
    frame = pd.read_csv(__import__("io").BytesIO(out))
    assert list(frame.columns) == ["date"] + [f"MT_{i:03d}" for i in range(321)]
    assert frame["date"].iloc[0] == "2012-01-01 00:00:00" and frame["date"].iloc[-1] == "2012-01-02 05:00:00"
    np.testing.assert_array_equal(frame.iloc[:, 1:].to_numpy(), matrix)
    with pytest.raises(ValueError, match=r"shape \(30, 321\), expected \(26304, 321\)"):
        D.convert_lstnet_electricity(raw)
    assert pd.date_range(D.ECL_START, periods=26304, freq="h")[-1] == pd.Timestamp("2014-12-31 23:00")


def test_demo_on_a_machine_without_the_files_downloads_them(server, cache, tmp_path, monkeypatch, capsys):
    from tsessm.cli import main

    server.files["/ETTh1.csv"] = ETTH1
    out = tmp_path / "demo"
    monkeypatch.setenv(D.OFFLINE_ENV_VAR, "1")
    assert main(["demo", "--no-track", "--out-dir", str(out), "--models", "naive"]) == 1
    err = capsys.readouterr().err
    assert "--data-dir" in err and D.URL_ENV_VAR in err and "downloads are off" in err and not out.exists()
    monkeypatch.delenv(D.OFFLINE_ENV_VAR)
    monkeypatch.setenv(D.URL_ENV_VAR, server.url)
    assert main(["demo", "--no-track", "--out-dir", str(out), "--models", "naive"]) == 0
    assert f"downloading ETTh1 from {server.url}/ETTh1.csv" in capsys.readouterr().err
    assert server.seen == ["/ETTh1.csv"] and (cache / "ETTh1.csv").is_file() and (out / "metrics.csv").is_file()
