"""Where dataset files live and how they arrive: the data root, checksums, downloads via pooch.

A file already present is verified (cached per path, size and mtime) and never rewritten; a missing
one is downloaded unless offline, else one DataError says what to place where.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import DataError

_BLOCK = 1 << 20
# (path, size, mtime_ns, md5, content_sha256) of files already verified in this process
_VERIFIED: set[tuple[str, int, int, str | None, str | None]] = set()


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset as published: its name, mirrors in order, and checksums."""

    name: str
    urls: tuple[str, ...]
    md5: str | None  # of the file as served (published)
    content_sha256: str | None = None  # of the uncompressed content, for .gz files

    def expected(self) -> str:
        """The checksums in words, for messages."""
        parts = [f"md5 {self.md5}"] if self.md5 else []
        if self.content_sha256:
            parts.append(f"uncompressed sha256 {self.content_sha256}")
        return " or ".join(parts) or "no checksum published"


def data_root(data_dir: str | Path | None = None) -> Path:
    """The explicit folder, else $TINYVISION_DATA, else the user cache (e.g. ~/.cache/tinyvision);
    one that exists as a file is a DataError naming it."""
    if data_dir is not None and str(data_dir) != "":
        root = Path(data_dir).expanduser()
    elif os.environ.get("TINYVISION_DATA"):
        root = Path(os.environ["TINYVISION_DATA"]).expanduser()
    else:
        import platformdirs

        root = Path(platformdirs.user_cache_dir("tinyvision"))
    if root.exists() and not root.is_dir():
        raise DataError(f"{root}: not a folder; the dataset folder (data_dir, --data-dir or $TINYVISION_DATA) "
                        "must be a folder")
    return root


def offline() -> bool:
    return os.environ.get("TINYVISION_OFFLINE", "").strip() == "1"


def find_file(folder: Path, remote: RemoteFile) -> Path | None:
    """The file as served, else (when its content hash is known) the .gz-stripped variant."""
    path = folder / remote.name
    if path.is_file():
        return path
    if remote.content_sha256 and remote.name.endswith(".gz"):
        plain = folder / remote.name.removesuffix(".gz")
        if plain.is_file():
            return plain
    return None


def ensure_files(dataset: str, files: Sequence[RemoteFile], root: Path, *,
                 download: bool = True, subfolder: str | None = None) -> dict[str, Path]:
    """{file name: local path} for every file, verified; downloads the missing ones if allowed.

    The files live in root/subfolder (default root/dataset): entries sharing files share a folder."""
    folder = Path(root) / (subfolder or dataset)
    found: dict[str, Path] = {}
    missing: list[RemoteFile] = []
    for remote in files:
        path = find_file(folder, remote)
        if path is None:
            missing.append(remote)
        else:
            verify(path, remote)
            found[remote.name] = path
    failures: list[str] = []
    if missing and download and not offline():
        for remote in list(missing):
            path = _download(folder, remote, failures)
            if path is not None:
                found[remote.name] = path
                missing.remove(remote)
    if missing:
        raise DataError(_missing_message(dataset, folder, missing, download, failures))
    return found


def verify(path: Path, remote: RemoteFile) -> None:
    """DataError unless `path` is the served file (md5) or holds the published content (sha256)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, remote.md5, remote.content_sha256)
    if key in _VERIFIED or not (remote.md5 or remote.content_sha256):
        return
    served = path.name == remote.name
    md5 = _hash_file(path, "md5") if served and remote.md5 else None
    ok = md5 is not None and md5 == remote.md5
    content = None
    if not ok and remote.content_sha256:
        content = _content_sha256(path, gzipped=served and remote.name.endswith(".gz"))
        ok = content == remote.content_sha256
    if not ok:
        found = " and ".join(f"{k} {v}" for k, v in (("md5", md5), ("uncompressed sha256", content))
                             if v is not None)
        raise DataError(f"{path}: checksum mismatch: expected {remote.expected()}, found {found}; "
                        f"delete or replace the file (it may be damaged or a different version)")
    _VERIFIED.add(key)


def _hash_file(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _content_sha256(path: Path, *, gzipped: bool) -> str:
    """sha256 of the uncompressed content; a .gz that does not decompress gives 'not gzip'."""
    if not gzipped:
        return _hash_file(path, "sha256")
    digest = hashlib.sha256()
    try:
        with gzip.open(path, "rb") as f:
            while block := f.read(_BLOCK):
                digest.update(block)
    except (OSError, EOFError, zlib.error) as exc:
        return f"unavailable (not a valid gzip file: {' '.join(str(exc).split())})"
    return digest.hexdigest()


def _download(folder: Path, remote: RemoteFile, failures: list[str]) -> Path | None:
    """Try each mirror in turn; record one line per failure."""
    import pooch  # only needed when something is missing

    known_hash = f"md5:{remote.md5}" if remote.md5 else None
    for url in remote.urls:
        try:
            got = pooch.retrieve(url, known_hash=known_hash, path=folder, fname=remote.name,
                                 progressbar=sys.stderr.isatty())
        except Exception as exc:  # network, HTTP, permission and hash errors all mean "next url"
            failures.append(f"{url}: {' '.join(str(exc).split())[:200] or type(exc).__name__}")
            continue
        path = Path(got)
        verify(path, remote)
        return path
    return None


def _missing_message(dataset: str, folder: Path, missing: list[RemoteFile], download: bool,
                     failures: list[str]) -> str:
    if not download:
        why = "downloads are off (download=False)"
    elif offline():
        why = "downloads are off (TINYVISION_OFFLINE=1)"
    elif failures:
        why = f"download failed ({'; '.join(failures)})"
    else:
        why = "there is no url to download from"
    places = "; ".join(f"{r.name} ({r.expected()}) at {folder / r.name} "
                       f"from {' or '.join(r.urls) or 'no known url'}" for r in missing)
    plain = any(r.content_sha256 and r.name.endswith(".gz") for r in missing)
    hint = " (a .gz may also be placed uncompressed, without the .gz)" if plain else ""
    return f"{dataset}: {len(missing)} file(s) missing and {why}. Place {places}{hint}"
