"""`sagan download`: put CelebA's `img_align_celeba.zip` and `list_eval_partition.txt` in data/raw/.

Sources (`data.source`): `gdrive` (the official Google Drive files), `url` (any mirror),
`local` (files the user already has, e.g. when Drive's quota blocks downloads) and `synthetic`
(procedural faces in CelebA's layout, see sagan.data.synthetic).

Downloads go to `<output>.part`, resume from it with an HTTP Range request after a dropped
connection, and are renamed into place only after the md5 check, so an interrupted or corrupt
download never passes as complete. `<output>.part.json` ties the .part file to the download it
belongs to: the URL asked for, and the ETag and total length the server reported. A .part of
another URL (or of unknown origin) is discarded, a resume whose ETag or length differs starts over,
and a 416 (nothing left to send) means complete only when the .part holds exactly the total length.
HTTP uses only the standard library.
"""
from __future__ import annotations

import html
import http.client
import json
import os
import re
import shutil
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from sagan import paths
from sagan import atomic
from sagan.atomic import atomic_path, write_json
from sagan.data.synthetic import is_synthetic_zip, write_synthetic_celeba
from sagan.digest import file_digest
from sagan.errors import SaganError
from sagan.params import DataParams

ZIP_NAME, PARTITION_NAME = paths.RAW_ZIP.name, paths.RAW_PARTITION.name

OUTPUTS = (("zip", ZIP_NAME, paths.RAW_ZIP), ("partition", PARTITION_NAME, paths.RAW_PARTITION))  # (param key, name, path)
# The official CelebA files (the md5s and Drive ids torchvision.datasets.CelebA uses).
OFFICIAL_MD5 = {ZIP_NAME: "00d2c5bc6d35e252742224ab0c1e8fcb", PARTITION_NAME: "d32c9cbf5e040fd4025c592c306e6668"}
GDRIVE_IDS = {ZIP_NAME: "0B7EVK8r0v71pZjFTYXZWM3FlRnM", PARTITION_NAME: "0B7EVK8r0v71pY0NSMzRuSXJEVkk"}
GDRIVE_URL = "https://drive.usercontent.google.com/download?id={id}&export=download&confirm=t"

USER_AGENT = "sagan-celeba (python urllib)"
CHUNK = 1 << 20
BACKOFF_BASE_S = 2.0  # retry k waits BACKOFF_BASE_S * 2**k seconds, at most BACKOFF_MAX_S
BACKOFF_MAX_S = 60.0
MAX_HTML_HOPS = 2  # Drive's confirm form is followed at most this often per file
HTML_HINT = ("Google Drive's CelebA quota is often exhausted ('too many users'); fetch the two files "
             "by hand (browser or a mirror) and set data.source: local with data.local.zip/partition, "
             "or data.source: url with data.urls.zip/partition")


def _html_title(head: bytes) -> str | None:
    """The page title if `head` (a file's first bytes) is an HTML page, else None."""
    text = head.lstrip().lower()
    if not (text.startswith(b"<!doctype html") or text.startswith(b"<html")):
        return None
    match = re.search(rb"<title>(.*?)</title>", head, re.IGNORECASE | re.DOTALL)
    return html.unescape(match.group(1).decode("utf-8", "replace")).strip() if match else "untitled page"


def _check_not_html(path: Path, what: str) -> None:
    with open(path, "rb") as f:
        title = _html_title(f.read(4096))
    if title is not None:
        raise SaganError(f"{what}: is an HTML page ('{title}'), not CelebA's file", hint=HTML_HINT)


def _verify(path: Path, name: str, data: DataParams, what: str) -> None:
    """Check `path` (the candidate for CelebA's `name`) against the official md5."""
    actual, expected = file_digest(path, "md5"), OFFICIAL_MD5[name]
    if actual == expected:
        return
    _check_not_html(path, what)
    if not data.verify_md5:
        print(f"sagan download: warning: {what}: md5 {actual} is not CelebA's {expected}; accepted because "
              f"data.verify_md5 is false", file=sys.stderr)
        return
    raise SaganError(f"{what}: md5 {actual} does not match CelebA's {name} md5 {expected} "
                     f"(a truncated or corrupted download, or a mirror's repackaged file)",
                     hint="download it again, or set data.verify_md5: false to accept another packaging")


def _reusable_outputs(data: DataParams) -> set[str]:
    """Names of the outputs already in data/raw that need not be fetched again."""
    if data.verify_md5:  # the md5 decides each file exactly
        return {name for _, name, dest in OUTPUTS if dest.is_file() and file_digest(dest, "md5") == OFFICIAL_MD5[name]}

    # Without md5s only a plausible pair counts: no HTML page, a real zip, and never the synthetic stand-in.
    def plausible(name: str, dest: Path) -> bool:
        if not dest.is_file():
            return False
        with open(dest, "rb") as f:
            if _html_title(f.read(4096)) is not None:
                return False
        return name != ZIP_NAME or (zipfile.is_zipfile(dest) and not is_synthetic_zip(dest))

    names = {name for _, name, _ in OUTPUTS}
    return names if all(plausible(name, dest) for _, name, dest in OUTPUTS) else set()


class _Interrupted(Exception):
    """The connection failed or ended early; worth retrying (the .part file keeps what arrived)."""


def _gdrive_confirm_url(page: str, base_url: str) -> str | None:
    """The download URL in Drive's "can't scan this file for viruses" form, if the page is that form."""
    form = re.search(r'<form[^>]*id="download-form"[^>]*action="([^"]+)"[^>]*>(.*?)</form>', page, re.DOTALL)
    if not form:
        return None
    fields = dict(re.findall(r'<input[^>]*type="hidden"[^>]*name="([^"]+)"[^>]*value="([^"]*)"', form.group(2)))
    action = urllib.parse.urljoin(base_url, html.unescape(form.group(1)))
    return f"{action}?{urllib.parse.urlencode({k: html.unescape(v) for k, v in fields.items()})}"


def _raise_disk_error(exc: OSError, path: Path) -> None:
    """Raise the one-line error for a full disk or an unwritable directory, else `exc` itself."""
    if exc.errno in atomic.NO_SPACE:
        raise atomic.no_space_error(path) from exc
    if exc.errno in atomic.NOT_WRITABLE:
        raise atomic.not_writable_error(path.parent, path, exc) from exc
    raise exc


def _record_path(part: Path) -> Path:
    """`<output>.part.json`: which download the .part file holds the start of."""
    return part.with_name(part.name + ".json")


def _read_record(part: Path) -> dict:
    """The .part file's record ({} when there is none or it is unreadable)."""
    try:
        record = json.loads(_record_path(part).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _discard(part: Path) -> None:
    part.unlink(missing_ok=True)
    _record_path(part).unlink(missing_ok=True)


def _changed(record: dict, etag: str | None, total: int) -> bool:
    """Whether the server's ETag or total length for the file differ from those `record` holds."""
    if etag and record.get("etag") and etag != record["etag"]:
        return True
    recorded = record.get("total")
    return isinstance(recorded, int) and recorded >= 0 and total >= 0 and total != recorded


def _complete_on_416(headers, offset: int, record: dict) -> bool:
    """A 416 (Range Not Satisfiable) for `bytes=OFFSET-`: is the .part the whole file?

    Only when its size is the file's total length: the 416's `Content-Range: bytes */N`, or else
    the length recorded when the download started. A 416 also means the file at the URL is now
    shorter than the .part, which must not pass as complete.
    """
    match = re.fullmatch(r"bytes \*/(\d+)", (headers.get("Content-Range") or "").strip())
    total = int(match.group(1)) if match else -1
    if _changed(record, headers.get("ETag"), total):
        return False
    if total < 0:
        recorded = record.get("total")
        total = recorded if isinstance(recorded, int) else -1
    return total >= 0 and offset == total


def _content_range(header: str) -> tuple[int, int]:
    """(first byte, total size or -1) from a `Content-Range: bytes 100-199/200` header."""
    match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", header.strip())
    if not match:
        return -1, -1
    return int(match.group(1)), -1 if match.group(2) == "*" else int(match.group(2))


def _attempt(url: str, part: Path, timeout_s: float, desc: str, source: str) -> str | None:
    """One HTTP request that appends to (or restarts) `part`, the download of `source` (`url` is
    where `source` led, e.g. through Drive's confirm form).

    Returns None when the file is complete, or the text of an HTML page the server sent instead.
    Raises _Interrupted for failures worth retrying and SaganError for the rest.
    """
    offset = part.stat().st_size if part.exists() else 0
    record = _read_record(part) if offset else {}
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # nothing left to send from `offset` on
            if _complete_on_416(exc.headers, offset, record):
                return None
            print(f"sagan download: {desc}: {part} ({offset} bytes) is not the whole file at {url}; "
                  f"starting over", file=sys.stderr)
            _discard(part)
            return _attempt(url, part, timeout_s, desc, source)
        if exc.code in (408, 429) or exc.code >= 500:
            raise _Interrupted(f"HTTP {exc.code}") from exc
        raise SaganError(f"{url}: HTTP {exc.code} {exc.reason}", hint="check the URL in params (data.urls)") from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise _Interrupted(str(exc)) from exc

    with response:
        etag = response.headers.get("ETag")
        if response.status == 206:
            start, total = _content_range(response.headers.get("Content-Range", ""))
            if start != offset:  # a resume at the wrong place would corrupt the file: start over
                _discard(part)
                raise _Interrupted(f"server resumed at byte {start} instead of {offset}")
            if _changed(record, etag, total):  # the .part holds the start of an older version
                print(f"sagan download: {desc}: the file at {url} changed since {part} was started; "
                      f"starting over", file=sys.stderr)
                _discard(part)
                offset = -1
        else:  # 200: the server sent the whole file (it ignored Range, or none was asked); restart
            offset = 0
            length = response.headers.get("Content-Length")
            total = int(length) if length is not None else -1
        if offset > 0:  # a resume keeps what the record already knows
            etag, total = etag or record.get("etag"), total if total >= 0 else record.get("total", -1)
        if offset >= 0:
            return _receive(response, part, offset, {"url": source, "etag": etag, "total": total}, desc)
    return _attempt(url, part, timeout_s, desc, source)  # from the first byte, on a new connection


def _receive(response, part: Path, offset: int, record: dict, desc: str) -> str | None:
    """Write `response`'s body to `part` from byte `offset`; see _attempt."""
    total = record["total"]
    try:
        first = response.read(CHUNK)
        if _html_title(first) is not None:
            return (first + response.read(1 << 20)).decode("utf-8", "replace")
    except (OSError, http.client.HTTPException) as exc:
        raise _Interrupted(str(exc)) from exc
    write_json(_record_path(part), record)  # before the first byte: a killed download keeps its origin
    try:
        f = open(part, "ab" if offset else "wb")
    except OSError as exc:
        _raise_disk_error(exc, part)
    with f, tqdm(total=total if total >= 0 else None, initial=offset, unit="B",
                 unit_scale=True, unit_divisor=1024, desc=desc) as bar:
        chunk = first
        while chunk:
            try:
                f.write(chunk)
            except OSError as exc:  # a full disk is not worth retrying
                _raise_disk_error(exc, part)
            bar.update(len(chunk))
            try:
                chunk = response.read(CHUNK)
            except (OSError, http.client.HTTPException) as exc:
                raise _Interrupted(str(exc)) from exc
        try:
            f.flush()
        except OSError as exc:
            _raise_disk_error(exc, part)
    received = part.stat().st_size
    if total >= 0 and received < total:  # http.client returns b"" when a connection drops early
        raise _Interrupted(f"connection closed after {received} of {total} bytes")
    return None


def fetch(url: str, dest: Path, name: str, data: DataParams,
          follow_html: Callable[[str, str], str | None] | None = None) -> None:
    """Download `url` to `dest` (CelebA's file `name`): resumable, retried, md5-checked, atomic.

    `follow_html(page, url)` may turn an HTML page into the URL to follow (Drive's confirm form).
    """
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _raise_disk_error(exc, dest)
    part = dest.with_name(dest.name + ".part")
    source = url
    if not part.exists():
        _record_path(part).unlink(missing_ok=True)
    elif (origin := _read_record(part).get("url")) != source:  # the start of another file
        print(f"sagan download: {name}: {part} was left by a download of {origin or 'an unknown URL'}, "
              f"not {source}; starting over", file=sys.stderr)
        _discard(part)
    failures = hops = 0
    while True:
        size_before = part.stat().st_size if part.exists() else 0
        try:
            page = _attempt(url, part, data.timeout_s, desc=name, source=source)
        except _Interrupted as exc:
            if part.exists() and part.stat().st_size > size_before:
                failures = 0  # progress was made: only consecutive failures count against data.retries
            failures += 1
            if failures > data.retries:
                resume = f"rerun to resume from {part}" if part.exists() else "check the network"
                raise SaganError(f"{url}: download of {name} failed after {data.retries} retries ({exc})",
                                 hint=f"{resume}, raise data.retries / data.timeout_s, or use data.source: "
                                      "local (files you have) or synthetic (offline stand-in)") from exc
            delay = min(BACKOFF_BASE_S * 2 ** (failures - 1), BACKOFF_MAX_S)
            print(f"sagan download: {name}: {exc}; retry {failures}/{data.retries} in {delay:.0f} s", file=sys.stderr)
            time.sleep(delay)
            continue
        if page is None:
            break
        next_url = follow_html(page, url) if follow_html and hops < MAX_HTML_HOPS else None
        if next_url is None:
            title = _html_title(page.encode()) or "untitled page"
            raise SaganError(f"{url}: the server sent an HTML page ('{title}') instead of {name}", hint=HTML_HINT)
        url, hops = next_url, hops + 1
    try:
        _verify(part, name, data, what=f"{url} ({name})")
    except SaganError:
        _discard(part)  # resuming from corrupt bytes can never succeed
        raise
    try:
        os.replace(part, dest)  # the .part file is the temporary name; rename only once verified
    except OSError as exc:
        _raise_disk_error(exc, dest)
    _record_path(part).unlink(missing_ok=True)


def _place_local(src: Path, dest: Path) -> None:
    """Hard-link `src` to `dest` (copy across file systems), atomically."""
    with atomic_path(dest) as tmp:
        tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


def _from_local(data: DataParams) -> None:
    for key, name, dest in OUTPUTS:
        if not data.local[key]:
            raise SaganError(f"data.local.{key}: empty", hint=f"set it to the path of your {name}")
        src = Path(data.local[key]).expanduser()
        if not src.is_file():
            raise SaganError(f"{src}: file not found (data.local.{key})", hint=f"set data.local.{key} to your {name}")
        _verify(src, name, data, what=str(src))
        _place_local(src, dest)
        print(f"sagan download: {dest} <- {src}")


def _from_urls(data: DataParams, urls: dict[str, str],
               follow_html: Callable[[str, str], str | None] | None = None) -> None:
    checked = "verified" if data.verify_md5 else "md5 not checked"
    for key, name, _ in OUTPUTS:
        if not urls[key]:
            raise SaganError(f"data.urls.{key}: empty", hint=f"set it to a mirror URL of {name}")
    reusable = _reusable_outputs(data)
    for key, name, dest in OUTPUTS:
        if name in reusable:
            print(f"sagan download: {dest} already present ({checked}); not downloading again")
            continue
        fetch(urls[key], dest, name, data, follow_html)
        print(f"sagan download: {dest} downloaded ({checked})")


def download(data: DataParams) -> None:
    """data/raw/'s two files from `data.source`: synthetic, a local copy, URLs or Google Drive."""
    if data.source == "synthetic":
        print(f"sagan download: writing {data.synthetic_images} SYNTHETIC faces (seed {data.synthetic_seed}): "
              f"a procedural stand-in, not CelebA")
        write_synthetic_celeba(paths.RAW_ZIP, paths.RAW_PARTITION, data.synthetic_images, data.synthetic_seed)
        print(f"sagan download: wrote {paths.RAW_ZIP} and {paths.RAW_PARTITION} (synthetic data)")
    elif data.source == "local":
        _from_local(data)
    elif data.source == "url":
        _from_urls(data, data.urls)
    else:
        urls = {key: GDRIVE_URL.format(id=GDRIVE_IDS[name]) for key, name, _ in OUTPUTS}
        _from_urls(data, urls, follow_html=_gdrive_confirm_url)
