"""Artifacts from object storage (``s3://``, ``gs://``, ``https://``), fetched once per node.

Through `obstore <https://developmentseed.org/obstore/>`_ (Apache-2.0, the Python face of the
Rust ``object_store`` crate that Arrow, DataFusion and crates.io use): one small wheel without
Python dependencies for S3 and S3-compatible stores, GCS and HTTP, streaming reads, and the
standard credential chains (``AWS_*`` variables, ``~/.aws`` files, IRSA web identity and instance
metadata; ``GOOGLE_APPLICATION_CREDENTIALS`` and GKE workload identity). s3fs/gcsfs would have
brought aiobotocore, aiohttp and gcsfs' Google client stack for the same few calls.

A custom S3 endpoint (an S3-compatible store) is the standard ``AWS_ENDPOINT_URL``; a plain-HTTP
endpoint also needs ``AWS_ALLOW_HTTP=true`` (the local stack sets both).

Every remote artifact needs its sha256: the cache is keyed by it. A fetch streams the object into
a temporary file beside the cache entry, hashing as it goes and stopping at
``artifacts.MAX_ARTIFACT_BYTES``; only a verified file is renamed into place, so the cache never
holds a wrong or partial entry. Replicas on one node share the cache directory
(``LVM_ARTIFACT_CACHE``) and a per-digest lock, so one of them downloads and the others wait and
reuse the file. The cache keeps at most ``LVM_ARTIFACT_CACHE_BYTES`` (default 50 GiB), least
recently used entries going first.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lvm_serving import artifacts
from lvm_serving.artifacts import (
    ArtifactError,
    ArtifactNotFoundError,
    ArtifactTooLargeError,
    ChecksumMismatchError,
    UnsupportedURIError,
    normalize_sha256,
)
from lvm_serving.contracts.serve_config import REMOTE_URI_SCHEMES

log = logging.getLogger(__name__)

_PROGRESS_EVERY = 64 << 20  # log a line per 64 MiB


class RemoteFetchError(ArtifactError):
    """The object store could not be read (unreachable, denied, throttled...)."""


def cache_root() -> Path:
    default = Path.home() / ".cache" / "lvm-rollout" / "artifacts"
    return Path(os.environ.get("LVM_ARTIFACT_CACHE", str(default)))


def cache_limit_bytes() -> int:
    return int(os.environ.get("LVM_ARTIFACT_CACHE_BYTES", str(50 << 30)))


def is_remote(uri: str) -> bool:
    return urllib.parse.urlparse(uri).scheme in REMOTE_URI_SCHEMES


def _store_and_key(uri: str) -> tuple[Any, str]:
    from obstore.store import GCSStore, HTTPStore, S3Store

    parsed = urllib.parse.urlparse(uri)
    key = urllib.parse.unquote(parsed.path.lstrip("/"))
    if not parsed.netloc or not key:
        raise UnsupportedURIError(f"artifact URI {uri!r} has no bucket/host or no object key",
                                  path=uri)
    if parsed.scheme == "s3":
        return S3Store(parsed.netloc), key  # AWS_* environment, files, web identity
    if parsed.scheme == "gs":
        return GCSStore(parsed.netloc), key
    return HTTPStore.from_url(f"https://{parsed.netloc}"), key


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


def _download(uri: str, target: Path, *, what: str) -> tuple[str, int]:
    """Stream ``uri`` into ``target``; return (sha256, size). Raises RemoteFetchError."""
    import obstore
    from obstore.exceptions import BaseError, NotFoundError

    store, key = _store_and_key(uri)
    digest, size, next_log, started = hashlib.sha256(), 0, _PROGRESS_EVERY, time.monotonic()
    try:
        result = obstore.get(store, key)
        total = int(result.meta.get("size") or 0)
        if total > artifacts.MAX_ARTIFACT_BYTES:
            raise ArtifactTooLargeError(
                f"{what} {uri} is {total:,} bytes, more than the {artifacts.MAX_ARTIFACT_BYTES:,}"
                " this loader reads (LVM_MAX_ARTIFACT_BYTES)", path=uri)
        log.info("fetching %s %s (%s bytes) into %s", what, uri, f"{total:,}", target.parent)
        with open(target, "wb") as out:
            for chunk in result.stream(min_chunk_size=8 << 20):
                data = memoryview(chunk)
                size += len(data)
                if size > artifacts.MAX_ARTIFACT_BYTES:
                    raise ArtifactTooLargeError(
                        f"{what} {uri} is larger than {artifacts.MAX_ARTIFACT_BYTES:,} bytes",
                        path=uri)
                digest.update(data)
                out.write(data)
                if size >= next_log:
                    log.info("fetching %s: %s of %s bytes", uri, f"{size:,}", f"{total:,}")
                    next_log += _PROGRESS_EVERY
    except (NotFoundError, FileNotFoundError):  # obstore raises the builtin for a 404
        raise ArtifactNotFoundError(
            f"{what} {uri}: no such object. Check the URI (bucket and key) and that the "
            "upload finished", path=uri) from None
    except BaseError as exc:  # obstore's own errors: the type, never the store's answer body
        log.warning("fetching %s failed: %.2000s", uri, exc)
        raise RemoteFetchError(
            f"{what} {uri}: the object store could not be read ({type(exc).__name__}); check "
            "the endpoint (AWS_ENDPOINT_URL), the credentials and the bucket policy. The "
            "store's message is in the serving log", path=uri) from exc
    log.info("fetched %s (%s bytes in %.1f s)", uri, f"{size:,}", time.monotonic() - started)
    return digest.hexdigest(), size


def _evict(root: Path, keep: Path) -> None:
    """Least recently used entries go until the cache fits its limit (never ``keep``)."""
    entries = [p for p in root.glob("??/*") if p.is_file() and len(p.name) == 64]
    total = sum(p.stat().st_size for p in entries)
    for p in sorted(entries, key=lambda p: p.stat().st_atime):
        if total <= cache_limit_bytes():
            break
        if p != keep:
            total -= p.stat().st_size
            p.unlink(missing_ok=True)


def fetch(uri: str, sha256: str | None, *, what: str = "artifact") -> Path:
    """The local, verified copy of a remote artifact (downloaded unless cached)."""
    if sha256 is None:
        raise ArtifactError(
            f"{what} {uri}: a sha256 is required for an artifact from object storage (the "
            "node cache is keyed by it); put the digest `sha256sum` prints into the spec",
            path=uri)
    expected = normalize_sha256(sha256, path=uri, what=what)
    root = cache_root()
    final = root / expected[:2] / expected
    if final.is_file():
        os.utime(final)  # recently used
        return final
    with _locked(final.with_name(expected + ".lock")):
        if final.is_file():  # another replica fetched it while we waited
            return final
        partial = final.with_name(f"{expected}.partial.{os.getpid()}")
        try:
            actual, _ = _download(uri, partial, what=what)
            if actual != expected:
                raise ChecksumMismatchError(
                    f"{what} {uri}: sha256 mismatch: expected {expected}, actual {actual}. "
                    "Nothing was kept or served; re-upload the object or put the digest "
                    "`sha256sum` prints into the spec.",
                    path=uri, expected=expected, actual=actual)
            os.chmod(partial, 0o644)
            os.replace(partial, final)
        finally:
            partial.unlink(missing_ok=True)
    _evict(root, final)
    return final
