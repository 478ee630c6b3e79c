"""`sagan download` against a real HTTP server on 127.0.0.1, and the local and synthetic sources."""
from __future__ import annotations

import errno
import hashlib
import http.server
import json
import threading
from pathlib import Path

import pytest

from sagan import paths
from sagan.data import download
from sagan.digest import file_digest
from sagan.data.synthetic import is_synthetic_zip
from sagan.errors import SaganError
from sagan.params import parse_params

ZIP_BYTES = bytes(range(256)) * 1200  # 300 KiB stand-in for img_align_celeba.zip
PARTITION_BYTES = b"".join(f"{i:06d}.jpg {i % 3}\n".encode() for i in range(1, 101))
QUOTA_PAGE = (b"<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head>"
              b"<body>Too many users have viewed or downloaded this file recently.</body></html>")


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


class Server:
    """A local HTTP server whose files and misbehaviours a test sets; it records request headers."""

    def __init__(self):
        self.files: dict[str, bytes] = {"/zip": ZIP_BYTES, "/partition": PARTITION_BYTES}
        self.drop_first_after: int | None = None  # cut the first request's body after this many bytes
        self.ignore_range = False
        self.etags: dict[str, str] = {}  # path -> the ETag header sent with it
        self.range_on_416 = True  # a 416 says `Content-Range: bytes */N`, as RFC 9110 asks
        self.requests: list[tuple[str, dict]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append((self.path, dict(self.headers)))
                path = self.path.split("?")[0]
                if path not in server.files:
                    self.send_error(404)
                    return
                data, status, start = server.files[path], 200, 0
                range_header = self.headers.get("Range")
                if range_header and not server.ignore_range:
                    start = int(range_header.removeprefix("bytes=").rstrip("-"))
                    status = 206
                    if start >= len(data):  # nothing at or after that byte: Range Not Satisfiable
                        self.send_response(416)
                        if server.range_on_416:
                            self.send_header("Content-Range", f"bytes */{len(data)}")
                        if path in server.etags:
                            self.send_header("ETag", server.etags[path])
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                body = data[start:]
                self.send_response(status)
                self.send_header("Content-Type", "text/html" if data.startswith(b"<!DOCTYPE") else "application/zip")
                self.send_header("Content-Length", str(len(body)))
                if path in server.etags:
                    self.send_header("ETag", server.etags[path])
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if server.drop_first_after is not None and len(server.requests) == 1:
                    self.wfile.write(body[:server.drop_first_after])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Run in a scratch project root; the official md5s become those of the files the test serves."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(download, "OFFICIAL_MD5", {"img_align_celeba.zip": _md5(ZIP_BYTES),
                                                   "list_eval_partition.txt": _md5(PARTITION_BYTES)})
    monkeypatch.setattr(download, "BACKOFF_BASE_S", 0.0)
    return tmp_path


def _params(**data):
    return parse_params({"data": data}, partial=True)


def _url_params(server, **extra):
    return _params(source="url", urls={"zip": f"{server.url}/zip", "partition": f"{server.url}/partition"}, **extra)


def test_file_digest_matches_hashlib(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(ZIP_BYTES * 5)  # > one read chunk
    assert file_digest(path, "md5") == _md5(ZIP_BYTES * 5) == file_digest(ZIP_BYTES * 5, "md5")  # or its bytes


def test_url_source_downloads_and_verifies(server, workdir, capsys):
    download.download(_url_params(server).data)
    assert paths.RAW_ZIP.read_bytes() == ZIP_BYTES
    assert paths.RAW_PARTITION.read_bytes() == PARTITION_BYTES
    assert sorted(p.name for p in paths.RAW_DIR.iterdir()) == ["img_align_celeba.zip", "list_eval_partition.txt"]
    assert len(server.requests) == 2

    download.download(_url_params(server).data)  # second run: verified outputs are not fetched again
    assert len(server.requests) == 2
    assert capsys.readouterr().out.count("already present (verified); not downloading again") == 2


def test_dropped_connection_resumes_with_range(server, workdir):
    server.drop_first_after = 100_000
    download.download(_url_params(server).data)
    (first_path, first_headers), (second_path, second_headers) = server.requests[:2]
    assert first_path == second_path == "/zip"
    assert "Range" not in first_headers
    assert second_headers["Range"] == "bytes=100000-"
    assert file_digest(paths.RAW_ZIP, "md5") == _md5(ZIP_BYTES)
    assert not (paths.RAW_DIR / "img_align_celeba.zip.part").exists()


def test_interrupted_download_never_passes_as_complete(server, workdir):
    server.drop_first_after = 100_000
    with pytest.raises(SaganError, match=r"download of img_align_celeba.zip failed after 0 retries"):
        download.download(_url_params(server, retries=0).data)
    assert not paths.RAW_ZIP.exists()
    part = paths.RAW_DIR / "img_align_celeba.zip.part"
    assert part.read_bytes() == ZIP_BYTES[:100_000]
    record = json.loads((paths.RAW_DIR / "img_align_celeba.zip.part.json").read_text())
    assert record == {"url": f"{server.url}/zip", "etag": None, "total": len(ZIP_BYTES)}
    download.download(_url_params(server, retries=0).data)  # a rerun resumes from the .part file
    assert server.requests[1][1]["Range"] == "bytes=100000-"
    assert paths.RAW_ZIP.read_bytes() == ZIP_BYTES and not part.exists()


def test_server_ignoring_range_restarts_cleanly(server, workdir):
    server.drop_first_after = 100_000
    server.ignore_range = True
    download.download(_url_params(server).data)
    assert server.requests[1][1]["Range"] == "bytes=100000-"  # asked to resume, got 200 with the whole file
    assert paths.RAW_ZIP.read_bytes() == ZIP_BYTES


PART = paths.RAW_DIR / "img_align_celeba.zip.part"
PART_RECORD = paths.RAW_DIR / "img_align_celeba.zip.part.json"  # which download the .part belongs to


def _interrupt_zip_download(server, **params) -> None:
    """A download of /zip that dies after 100,000 bytes and leaves its .part file, like a kill midway."""
    server.drop_first_after = 100_000
    with pytest.raises(SaganError, match=r"download of img_align_celeba.zip failed after 0 retries"):
        download.download(_url_params(server, retries=0, **params).data)
    server.drop_first_after = None
    assert PART.read_bytes() == ZIP_BYTES[:100_000]


def _zip_requests(server, path: str = "/zip") -> list[dict]:
    return [headers for p, headers in server.requests if p == path]


def test_stale_part_of_another_url_is_never_installed(server, workdir):
    # The reported case: a killed download of a large file, then data.urls.zip pointed at a smaller
    # file. Resuming at byte 100,000 of a 50,000-byte file gets a 416, which once passed as
    # "complete" and installed the other file's prefix; the .part of another URL is now discarded.
    _interrupt_zip_download(server, verify_md5=False)
    server.files["/small"] = ZIP_BYTES[:50_000][::-1]
    params = _params(source="url", verify_md5=False, retries=0,
                     urls={"zip": f"{server.url}/small", "partition": f"{server.url}/partition"})
    download.download(params.data)
    assert paths.RAW_ZIP.read_bytes() == ZIP_BYTES[:50_000][::-1]
    assert [h.get("Range") for h in _zip_requests(server, "/small")] == [None]  # started over
    assert sorted(p.name for p in paths.RAW_DIR.iterdir()) == ["img_align_celeba.zip", "list_eval_partition.txt"]


def test_part_without_its_record_is_started_over(server, workdir):
    paths.RAW_DIR.mkdir(parents=True)
    PART.write_bytes(ZIP_BYTES[::-1][:1000])  # of unknown origin (e.g. written by an older version)
    download.download(_url_params(server).data)
    assert [h.get("Range") for h in _zip_requests(server)] == [None]
    assert paths.RAW_ZIP.read_bytes() == ZIP_BYTES and not PART.exists() and not PART_RECORD.exists()


def _part_of_this_url(server, data: bytes, **record) -> None:
    paths.RAW_DIR.mkdir(parents=True, exist_ok=True)
    PART.write_bytes(data)
    PART_RECORD.write_text(json.dumps({"url": f"{server.url}/zip", **record}))


@pytest.mark.parametrize("range_on_416", [True, False])
def test_416_completes_a_part_that_holds_the_whole_file(server, workdir, range_on_416):
    # Killed after the last byte but before the rename: the resume asks for nothing more.
    server.range_on_416 = range_on_416  # without Content-Range, the length in the record decides
    _part_of_this_url(server, ZIP_BYTES, total=len(ZIP_BYTES))
    download.download(_url_params(server).data)
    assert [h.get("Range") for h in _zip_requests(server)] == [f"bytes={len(ZIP_BYTES)}-"]
    assert paths.RAW_ZIP.read_bytes() == ZIP_BYTES and not PART.exists() and not PART_RECORD.exists()


@pytest.mark.parametrize("range_on_416, record", [
    (True, {"total": len(ZIP_BYTES)}),  # the server says the file is now shorter than the .part
    (False, {"total": len(ZIP_BYTES), "etag": '"v1"'}),  # no length on the 416, but another ETag
    (False, {}),  # no length anywhere: nothing says the .part is complete
])
def test_416_with_a_part_of_another_length_starts_over(server, workdir, range_on_416, record):
    server.range_on_416 = range_on_416
    server.etags["/zip"] = '"v2"'
    _part_of_this_url(server, ZIP_BYTES, **record)
    server.files["/zip"] = ZIP_BYTES[::-1][:200_000]  # the file at this URL changed, and shrank
    download.download(_url_params(server, verify_md5=False).data)
    assert [h.get("Range") for h in _zip_requests(server)] == [f"bytes={len(ZIP_BYTES)}-", None]
    assert paths.RAW_ZIP.read_bytes() == ZIP_BYTES[::-1][:200_000]


@pytest.mark.parametrize("change", ["etag", "length"])
def test_file_changed_at_the_same_url_starts_over(server, workdir, change):
    new = ZIP_BYTES[::-1] if change == "etag" else ZIP_BYTES[::-1] + b"longer"
    if change == "etag":
        server.etags["/zip"] = '"v1"'
    _interrupt_zip_download(server, verify_md5=False)
    server.files["/zip"] = new
    if change == "etag":
        server.etags["/zip"] = '"v2"'
    download.download(_url_params(server, verify_md5=False, retries=0).data)
    assert paths.RAW_ZIP.read_bytes() == new  # never old bytes with the new file's tail
    assert [h.get("Range") for h in _zip_requests(server)][1:] == ["bytes=100000-", None]


def test_disk_full_while_downloading_is_one_line(server, workdir, monkeypatch):
    real_open = open

    class FullDisk:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    def full_open(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        return FullDisk(f) if str(path).endswith(".part") and "b" in mode and "r" not in mode else f

    monkeypatch.setattr(download, "open", full_open, raising=False)
    with pytest.raises(SaganError) as exc:
        download.download(_url_params(server).data)
    assert str(exc.value).startswith(f"no space left on device while writing {PART}")
    assert len(_zip_requests(server)) == 1  # not retried: waiting does not free disk space


def test_html_quota_page_is_recognised(server, workdir):
    server.files["/zip"] = QUOTA_PAGE
    with pytest.raises(SaganError) as exc:
        download.download(_url_params(server).data)
    message = str(exc.value)
    assert message.startswith(f"{server.url}/zip: the server sent an HTML page ('Google Drive - Quota exceeded') "
                              "instead of img_align_celeba.zip (hint:")
    assert "data.source: local" in message and "\n" not in message
    assert not paths.RAW_ZIP.exists()


def test_wrong_file_fails_md5_and_is_discarded(server, workdir):
    server.files["/zip"] = ZIP_BYTES[::-1]
    with pytest.raises(SaganError) as exc:
        download.download(_url_params(server).data)
    assert str(exc.value).startswith(
        f"{server.url}/zip (img_align_celeba.zip): md5 {_md5(ZIP_BYTES[::-1])} does not match CelebA's "
        f"img_align_celeba.zip md5 {_md5(ZIP_BYTES)} (a truncated or corrupted download")
    assert not paths.RAW_ZIP.exists()
    assert not (paths.RAW_DIR / "img_align_celeba.zip.part").exists()
    assert not (paths.RAW_DIR / "img_align_celeba.zip.part.json").exists()


def test_wrong_file_accepted_with_warning_when_md5_check_is_off(server, workdir, capsys):
    server.files["/zip"] = ZIP_BYTES[::-1]
    download.download(_url_params(server, verify_md5=False).data)
    assert paths.RAW_ZIP.read_bytes() == ZIP_BYTES[::-1]
    assert "accepted because data.verify_md5 is false" in capsys.readouterr().err


def test_synthetic_stand_in_never_counts_as_downloaded_data(server, workdir):
    download.download(_params(source="synthetic", synthetic_images=10).data)
    download.download(_url_params(server, verify_md5=False).data)  # even without md5s to compare
    assert paths.RAW_ZIP.read_bytes() == ZIP_BYTES
    assert [path for path, _ in server.requests] == ["/zip", "/partition"]


def test_http_404_is_a_one_line_error(server, workdir):
    params = _params(source="url", urls={"zip": f"{server.url}/missing", "partition": f"{server.url}/partition"})
    with pytest.raises(SaganError, match=rf"^{server.url}/missing: HTTP 404 "):
        download.download(params.data)


def test_empty_url_names_the_param(workdir):
    with pytest.raises(SaganError, match=r"^data.urls.zip: empty \(hint:"):
        download.download(_params(source="url").data)


DRIVE_CONFIRM_FORM = """<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>
<form id="download-form" action="{action}" method="get">
<input type="submit" id="uc-download-link" value="Download anyway"/>
<input type="hidden" name="id" value="FILEID"><input type="hidden" name="export" value="download">
<input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="a&amp;b">
</form></body></html>"""


def test_gdrive_confirm_form_is_followed(server, workdir, monkeypatch):
    # Drive answers each file id with its "can't scan for viruses" form; the form leads to the file.
    monkeypatch.setattr(download, "GDRIVE_URL", server.url + "/uc-{id}")
    monkeypatch.setattr(download, "GDRIVE_IDS", {"img_align_celeba.zip": "z", "list_eval_partition.txt": "p"})
    server.files["/uc-z"] = DRIVE_CONFIRM_FORM.format(action=f"{server.url}/zip").encode()
    server.files["/uc-p"] = DRIVE_CONFIRM_FORM.format(action=f"{server.url}/partition").encode()
    download.download(_params(source="gdrive").data)
    assert paths.RAW_ZIP.read_bytes() == ZIP_BYTES
    assert paths.RAW_PARTITION.read_bytes() == PARTITION_BYTES
    query = "?id=FILEID&export=download&confirm=t&uuid=a%26b"
    assert [path for path, _ in server.requests] == ["/uc-z", "/zip" + query, "/uc-p", "/partition" + query]


def test_gdrive_quota_page_says_what_to_do(server, workdir, monkeypatch):
    monkeypatch.setattr(download, "GDRIVE_URL", server.url + "/uc-{id}")
    server.files["/uc-" + download.GDRIVE_IDS["img_align_celeba.zip"]] = QUOTA_PAGE
    with pytest.raises(SaganError, match=r"HTML page \('Google Drive - Quota exceeded'\) instead of "
                                         r"img_align_celeba.zip \(hint: Google Drive's CelebA quota"):
        download.download(_params(source="gdrive").data)


def test_gdrive_confirm_url_is_parsed_from_the_form():
    page = DRIVE_CONFIRM_FORM.format(action="https://drive.usercontent.google.com/download")
    assert download._gdrive_confirm_url(page, "https://drive.usercontent.google.com/download?id=FILEID") == (
        "https://drive.usercontent.google.com/download?id=FILEID&export=download&confirm=t&uuid=a%26b")
    assert download._gdrive_confirm_url(QUOTA_PAGE.decode(), "https://x") is None


def _local_files(tmp_path: Path) -> tuple[Path, Path]:
    zip_path, partition_path = tmp_path / "mine" / "img_align_celeba.zip", tmp_path / "mine" / "parts.txt"
    zip_path.parent.mkdir()
    zip_path.write_bytes(ZIP_BYTES)
    partition_path.write_bytes(PARTITION_BYTES)
    return zip_path, partition_path


def test_local_source_places_verified_files(workdir):
    zip_path, partition_path = _local_files(workdir)
    download.download(_params(source="local", local={"zip": str(zip_path), "partition": str(partition_path)}).data)
    assert paths.RAW_ZIP.read_bytes() == ZIP_BYTES
    assert paths.RAW_PARTITION.read_bytes() == PARTITION_BYTES
    assert sorted(p.name for p in paths.RAW_DIR.iterdir()) == ["img_align_celeba.zip", "list_eval_partition.txt"]


def test_local_source_missing_file_names_the_path(workdir):
    zip_path, _ = _local_files(workdir)
    missing = workdir / "nowhere" / "list_eval_partition.txt"
    params = _params(source="local", local={"zip": str(zip_path), "partition": str(missing)})
    with pytest.raises(SaganError) as exc:
        download.download(params.data)
    assert str(exc.value) == (f"{missing}: file not found (data.local.partition) "
                              "(hint: set data.local.partition to your list_eval_partition.txt)")


def test_local_html_page_saved_as_zip_is_recognised(workdir):
    zip_path, partition_path = _local_files(workdir)
    zip_path.write_bytes(QUOTA_PAGE)
    params = _params(source="local", local={"zip": str(zip_path), "partition": str(partition_path)})
    with pytest.raises(SaganError, match=rf"^{zip_path}: is an HTML page \('Google Drive - Quota exceeded'\)"):
        download.download(params.data)
    assert not paths.RAW_ZIP.exists()


def test_synthetic_source_writes_labelled_stand_in(workdir, capsys):
    download.download(_params(source="synthetic", synthetic_images=10, synthetic_seed=3).data)
    assert is_synthetic_zip(paths.RAW_ZIP)
    assert len(paths.RAW_PARTITION.read_text().splitlines()) == 10
    out = capsys.readouterr().out
    assert "10 SYNTHETIC faces (seed 3): a procedural stand-in, not CelebA" in out
