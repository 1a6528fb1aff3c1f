"""Safe downloads: retries, resume with HTTP Range, checksum before rename, safe extraction.

A file is written to ``NAME.part`` and renamed to ``NAME`` only once its MD5 (or SHA-256, or
a SHA-256 prefix, as torchvision publishes for its weights) matches the official one; a
dropped connection leaves the ``.part`` file to be resumed (``Range: bytes=N-``) by the next
attempt or the next run; a mismatch deletes it. Archives are checked
member by member before anything is extracted, then unpacked into a temporary folder in the
root and moved into place, so a refused or broken archive leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path, PurePosixPath, PureWindowsPath

from cnnlab.data.catalog import IMAGENET_ARCHIVES, SOURCES, Source
from cnnlab.data.dataset import DatasetError

__all__ = [
    "Check",
    "ChecksumError",
    "DownloadError",
    "download",
    "fetch",
    "md5_file",
    "safe_extract",
    "sha256_file",
    "verify",
]

Log = Callable[[str], None]


class DownloadError(DatasetError):
    """A file could not be fetched (after retries, or the server refused it)."""


class ChecksumError(DownloadError):
    """The fetched bytes do not have the official MD5 (or SHA-256)."""


class _Retryable(Exception):
    pass


def md5_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _checksum(md5: str | None, sha256: str | None) -> tuple[str, str, Callable[[Path], str]]:
    """(name, expected value or prefix, function of a file) of the check ``fetch`` makes."""
    if (md5 is None) == (sha256 is None):
        raise ValueError("fetch needs exactly one of md5= and sha256=")
    if md5 is not None:
        return "MD5", md5, md5_file
    assert sha256 is not None
    if not sha256 or len(sha256) > 64:
        raise ValueError(f"sha256= must be 1 to 64 hex digits, got {sha256!r}")
    return "SHA-256", sha256.lower(), lambda p: sha256_file(p)[: len(sha256)]


def byte_limit(size: int | None) -> int | None:
    """The most bytes a download of a ``size``-byte file may write: the size plus a margin
    (1%, at least 64 KiB), so an endless or wrong response stops early, not at a full disk."""
    return None if size is None else size + max(size // 100, 1 << 16)


def _fetch_once(url: str, part: Path, timeout: float, size: int | None = None) -> None:
    """Append the rest of ``url`` to ``part`` (all of it if the server ignores Range); stop
    with a DownloadError past :func:`byte_limit` of ``size``."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "cnnlab", "Range": f"bytes={offset}-"} if offset else {
        "User-Agent": "cnnlab"}
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                          timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # nothing left to send: the partial file is whole
            return
        if exc.code >= 500:
            raise _Retryable(f"HTTP {exc.code} {exc.reason}") from None
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, HTTPException) as exc:
        raise _Retryable(str(getattr(exc, "reason", exc))) from None
    with response:
        resumed = offset > 0 and response.status == 206
        length = response.headers.get("Content-Length")
        expected = int(length) if length is not None and length.isdigit() else None
        start = offset if resumed else 0
        limit = byte_limit(size)  # (http.client itself reads no further than Content-Length)
        received = 0
        with part.open("ab" if resumed else "wb") as fh:
            try:
                while block := response.read(1 << 16):
                    if limit is not None and start + received + len(block) > limit:
                        fh.close()
                        part.unlink(missing_ok=True)
                        raise DownloadError(
                            f"{url}: the server sent more than the {limit:,} bytes allowed "
                            f"for {part.name.removesuffix('.part')} (the official file has "
                            f"{size:,}); stopped and deleted the partial download")
                    fh.write(block)
                    received += len(block)
            except (OSError, HTTPException) as exc:
                raise _Retryable(f"connection lost after {received} bytes ({exc!r})") from None
        if expected is not None and received < expected:
            raise _Retryable(f"connection closed after {received} of {expected} bytes")


def _fetch_with_retries(
    url: str, part: Path, retries: int, timeout: float, backoff: float,
    failures: list[str], log: Log | None, size: int | None = None,
) -> bool:
    """True once ``url`` has been read to its end into ``part``; False after the retries or
    a refusal (HTTP 4xx), with the reasons appended to ``failures``."""
    for attempt in range(retries + 1):
        if log:
            resume = f" (resuming at byte {part.stat().st_size})" if part.exists() else ""
            log(f"fetching {url}{resume}")
        try:
            _fetch_once(url, part, timeout, size)
            return True
        except _Retryable as exc:
            failures.append(f"{url}: {exc}")
            if attempt < retries:
                time.sleep(backoff * 2**attempt)
        except DownloadError as exc:
            failures.append(str(exc))
            return False
    return False


def fetch(
    urls: str | tuple[str, ...],
    dest: str | Path,
    md5: str | None = None,
    *,
    sha256: str | None = None,
    retries: int = 3,
    timeout: float = 60.0,
    backoff: float = 1.0,
    log: Log | None = None,
    size: int | None = None,
) -> Path:
    """Download ``dest`` from the first of ``urls`` that serves it, resuming ``dest.part``;
    rename to ``dest`` only when the MD5 equals ``md5`` (or the SHA-256 starts with
    ``sha256``, a full digest or a prefix). An existing good ``dest`` is kept (one with
    another digest is fetched again). ``size`` (the official bytes) caps what is written: a
    response that runs past it (an endless one) stops with a DownloadError."""
    if retries < 0:
        raise ValueError(f"retries must be 0 or more, got {retries}")
    kind, expected, digest_of = _checksum(md5, sha256)
    urls = (urls,) if isinstance(urls, str) else tuple(urls)
    dest = Path(dest)
    if dest.is_file() and digest_of(dest) == expected:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    failures: list[str] = []
    for url in urls:  # mirrors in order; a partial file carries over (same bytes)
        if not _fetch_with_retries(url, part, retries, timeout, backoff, failures, log, size):
            continue
        actual = digest_of(part) if part.exists() else "nothing (empty response)"
        if actual != expected:
            part.unlink(missing_ok=True)
            raise ChecksumError(
                f"{url}: {kind} of {dest.name} is {actual}, expected {expected}; "
                "the partial download was deleted"
            )
        os.replace(part, dest)
        return dest
    kept = f"; {part.name} is kept to resume from" if part.exists() else ""
    raise DownloadError(f"could not fetch {dest.name}: {failures[-1]}{kept}")


def _unsafe_name(name: str) -> str | None:
    posix = name.replace("\\", "/")
    windows = PureWindowsPath(name)
    if not name:
        return "an empty name"
    if posix.startswith("/") or windows.drive or windows.root:
        return "an absolute path"
    if ".." in PurePosixPath(posix).parts:
        return "a '..' path component"
    return None


def _tar_problem(member: tarfile.TarInfo) -> str | None:
    if problem := _unsafe_name(member.name):
        return problem
    if member.issym() or member.islnk():
        return f"a link (to {member.linkname!r})"
    if member.ischr() or member.isblk() or member.isfifo():
        return "a device or FIFO"
    if not (member.isfile() or member.isdir()):
        return "not a regular file or folder"
    return None


def _zip_problem(info: zipfile.ZipInfo) -> str | None:
    if problem := _unsafe_name(info.filename):
        return problem
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind == stat.S_IFLNK:
        return "a link"
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "a device or special file"
    return None


def safe_extract(archive: str | Path, dest: str | Path) -> list[Path]:
    """Extract a tar (any compression) or zip archive into ``dest``, refusing absolute paths,
    ``..``, links and device files; returns the top-level paths created. Every member is
    checked before any is written, and extraction goes through a temporary folder."""
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest))
    replaced = Path(tempfile.mkdtemp(prefix=".replaced-", dir=dest))
    try:
        if tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tar:
                members = tar.getmembers()
                _refuse(archive, [(m.name, _tar_problem(m)) for m in members])
                if hasattr(tarfile, "data_filter"):  # the standard library's own guard as well
                    tar.extractall(tmp, filter="data")
                else:
                    tar.extractall(tmp)  # noqa: S202 (every member checked above)
        elif zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                _refuse(archive, [(i.filename, _zip_problem(i)) for i in zf.infolist()])
                zf.extractall(tmp)
        else:
            raise DatasetError(f"{archive}: not a tar or zip archive")
        return [_move_into_place(entry, dest, replaced) for entry in sorted(tmp.iterdir())]
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise DatasetError(f"{archive}: cannot extract ({type(exc).__name__}: {exc})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(replaced, ignore_errors=True)


def _move_into_place(entry: Path, dest: Path, replaced: Path) -> Path:
    """Rename ``entry`` to ``dest/entry.name``. What was there is first renamed aside into
    ``replaced`` (deleted by the caller afterwards) and renamed back if the move fails, so an
    error never leaves it half-deleted."""
    target, aside = dest / entry.name, replaced / entry.name
    had_old = target.exists() or target.is_symlink()
    if had_old:
        os.replace(target, aside)
    try:
        os.replace(entry, target)
    except OSError:
        if had_old:
            os.replace(aside, target)
        raise
    return target


def _refuse(archive: Path, problems: list[tuple[str, str | None]]) -> None:
    for name, problem in problems:
        if problem:
            raise DatasetError(
                f"{archive}: refusing to extract {name!r}, which is {problem}; "
                "nothing was extracted"
            )


def download(
    name: str,
    root: str | Path,
    *,
    mirror: str | None = None,
    extra: bool = False,
    retries: int = 3,
    backoff: float = 1.0,
    log: Log | None = None,
) -> list[Path]:
    """Fetch (and extract) dataset ``name`` into ``root``; ``mirror`` is a base URL to use
    instead of the official ones (same file names); ``extra`` adds optional files."""
    source = _source(name)
    if source.manual:
        raise DatasetError(source.manual)
    root = Path(root)
    paths = []
    for remote in source.files:
        if remote.optional and not extra:
            continue
        urls = (f"{mirror.rstrip('/')}/{remote.name}",) if mirror else remote.urls
        path = fetch(urls, root / remote.name, remote.md5, retries=retries, backoff=backoff,
                     log=log, size=remote.size)
        if log:
            log(f"{path}: MD5 {remote.md5} ok")
        if remote.extract:
            paths += safe_extract(path, root)
        else:
            paths.append(path)
    return paths


def _source(name: str) -> Source:
    if name not in SOURCES:
        raise ValueError(f"no download source for {name!r}; known: {', '.join(SOURCES)}")
    return SOURCES[name]


@dataclass(frozen=True)
class Check:
    """One verification: ``what`` (a file or a split count), the expected and the found value."""

    what: str
    expected: str
    found: str

    @property
    def ok(self) -> bool:
        return self.expected == self.found


def verify(name: str, root: str | Path) -> list[Check]:
    """Check a dataset under ``root`` against its official MD5s and image counts.

    Files that are the dataset itself (MNIST's gz, SVHN's .mat, CIFAR's extracted batches) must
    be present; downloaded archives are checked when present; image folders are counted.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} does not exist or is not a folder")
    source = _source(name)
    checks: list[Check] = []

    def check_file(rel: str, md5: str, required: bool) -> None:
        path = root / rel
        if path.is_file():
            checks.append(Check(str(path), md5, md5_file(path)))
        elif required:
            checks.append(Check(str(path), md5, "missing"))

    archives = IMAGENET_ARCHIVES if name == "imagenet" else [
        (f.name, f.md5) for f in source.files]
    extracted = {f.name for f in source.files if f.extract}
    for rel, md5 in archives:
        optional = rel in extracted or name == "imagenet" or any(
            f.optional for f in source.files if f.name == rel)
        check_file(rel, md5, required=not optional)
    for rel, md5 in source.contents:
        check_file(rel, md5, required=True)
    if name in ("imagenet", "imagenette"):
        from cnnlab.data.folder import load_folder

        splits = load_folder(root, name)
        for split, count in source.counts:
            found = str(len(splits[split])) if split in splits else "missing"
            checks.append(Check(f"{name} {split} images", str(count), found))
    return checks
