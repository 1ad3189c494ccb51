"""Model artifacts on disk: URIs, sha256 verification, sidecars, atomic writes, their errors.

Checkpoints, concept banks and eval sets are all files named by a URI and pinned by a sha256, so
the rules for finding, verifying and writing them live here once, below the modules that give
those files a meaning (:mod:`lvm_serving.checkpoints`, :mod:`lvm_serving.concept_bank`,
:mod:`lvm_serving.synthetic`). Nothing here imports torch or knows a file format.

URIs: ``file:///abs/path``, ``file://localhost/abs/path`` or a plain path; ``s3://``, ``gs://``
and ``https://`` are fetched into the node's cache first (:mod:`lvm_serving.remote`, a sha256
required). Other schemes raise :class:`UnsupportedURIError`.

Verification (:func:`open_verified`) reads the file once into memory, hashes those bytes and hands
back a reader over the *same* bytes, so nothing written to the file (in place or by rename) after
the check is ever loaded. Files above ``LVM_MAX_ARTIFACT_BYTES`` (default 8 GiB) are refused
before they are read. Writers use
:func:`atomic_write` (a temporary file in the same directory, then ``os.replace``) so readers
never see half a file, and :func:`write_sha256_sidecar` for the ``<file>.sha256`` that
``sha256sum -c`` accepts.

Errors (all :class:`ArtifactError`; each message names the file and what to do)::

    ArtifactError
    ├── UnsupportedURIError        scheme other than file://
    ├── ArtifactNotFoundError      no such file (also a FileNotFoundError)
    ├── InvalidChecksumError       the expected sha256 is not 64 hex digits
    ├── ChecksumMismatchError      .expected, .actual
    ├── ArtifactTooLargeError      above LVM_MAX_ARTIFACT_BYTES
    ├── CheckpointError            (the checkpoint file itself: lvm_serving.checkpoints)
    └── ConceptBankError           (the concept bank file itself: lvm_serving.concept_bank)
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any, BinaryIO

SHA256_SUFFIX = ".sha256"
_CHUNK = 1 << 20

# --------------------------------------------------------------------------------------------
# Errors


class ArtifactError(Exception):
    """Base of every checkpoint / concept bank loading error. ``path`` names the file."""

    def __init__(self, message: str, *, path: str | os.PathLike[str] | None = None) -> None:
        super().__init__(message)
        self.path = None if path is None else str(path)


class UnsupportedURIError(ArtifactError, ValueError):
    pass


class ArtifactNotFoundError(ArtifactError, FileNotFoundError):
    pass


class InvalidChecksumError(ArtifactError, ValueError):
    pass


class ChecksumMismatchError(ArtifactError):
    def __init__(self, message: str, *, path: str, expected: str, actual: str) -> None:
        super().__init__(message, path=path)
        self.expected = expected
        self.actual = actual


# --------------------------------------------------------------------------------------------
# URIs and checksums (shared with the concept bank)


def resolve_local_path(uri: str | os.PathLike[str], *, what: str = "artifact") -> Path:
    """A local path from ``file://`` URIs or plain paths; anything else is unsupported here."""
    text = os.fspath(uri)
    if not text:
        raise UnsupportedURIError(f"empty {what} URI", path=text)
    parsed = urllib.parse.urlparse(text)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise UnsupportedURIError(
                f"{what} URI {text!r} names host {parsed.netloc!r}; only local files "
                "(file:///path or file://localhost/path) are supported",
                path=text,
            )
        return Path(urllib.parse.unquote(parsed.path))
    # One-letter schemes are Windows drive letters, not URI schemes.
    if parsed.scheme and len(parsed.scheme) > 1:
        raise UnsupportedURIError(
            f"{what} URI {text!r}: scheme {parsed.scheme!r} is not supported; use file:///path, "
            "an absolute path, s3://bucket/key, gs://bucket/key or https://host/path.",
            path=text,
        )
    return Path(text)


_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


def normalize_sha256(value: str, *, path: str | None = None, what: str = "artifact") -> str:
    """Lower-case hex; accepts an optional ``sha256:`` prefix."""
    text = str(value).strip().lower()
    text = text.removeprefix("sha256:")
    if not _SHA_RE.match(text):
        raise InvalidChecksumError(
            f"expected sha256 for {what} {path or ''} is not 64 hex digits: {value!r}. "
            "Use the hex digest `sha256sum` prints (optionally prefixed sha256:).",
            path=path,
        )
    return text


def sha256_stream(f: BinaryIO) -> str:
    digest = hashlib.sha256()
    while chunk := f.read(_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    with open(path, "rb") as f:
        return sha256_stream(f)


def write_sha256_sidecar(path: str | os.PathLike[str], digest: str | None = None) -> str:
    """Write ``<path>.sha256`` in ``sha256sum`` format; return the digest."""
    path = Path(path)
    digest = digest or sha256_file(path)
    Path(str(path) + SHA256_SUFFIX).write_text(f"{digest}  {path.name}\n")
    return digest


def read_sha256_sidecar(path: str | os.PathLike[str]) -> str | None:
    """The digest from ``<path>.sha256`` if that file exists."""
    sidecar = Path(str(path) + SHA256_SUFFIX)
    if not sidecar.is_file():
        return None
    return normalize_sha256(sidecar.read_text().split()[0], path=str(sidecar))


#: The largest artifact read into memory for verification (the seed's checkpoint is ~45 MB).
MAX_ARTIFACT_BYTES = int(os.environ.get("LVM_MAX_ARTIFACT_BYTES", str(8 << 30)))


class ArtifactTooLargeError(ArtifactError):
    pass


def open_verified(
    uri: str | os.PathLike[str], sha256: str | None, *, what: str, hint: str = ""
) -> tuple[Path, BinaryIO, str]:
    """Read a local artifact, hash those bytes and compare with ``sha256`` (if given).

    Returns ``(path, a reader over exactly the bytes hashed, actual digest)``; the caller closes
    it. The file is read once: a writer that changes it after the check (in place or by
    rename) cannot change what is loaded.
    """
    from lvm_serving import remote  # (it builds on this module)

    text = os.fspath(uri)
    path = (remote.fetch(text, sha256, what=what) if remote.is_remote(text)
            else resolve_local_path(uri, what=what))
    expected = None if sha256 is None else normalize_sha256(sha256, path=str(path), what=what)
    try:
        f = open(path, "rb")  # noqa: SIM115  (returned to the caller)
    except FileNotFoundError:
        raise ArtifactNotFoundError(
            f"{what} file not found: {path}. Check the URI"
            + (f" ({hint})" if hint else "")
            + "; python -m lvm_serving.train writes a checkpoint, its concept bank and eval set.",
            path=str(path),
        ) from None
    except IsADirectoryError:
        raise ArtifactNotFoundError(
            f"{what} path {path} is a directory; point the URI at the file itself",
            path=str(path),
        ) from None
    try:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_ARTIFACT_BYTES:
            raise ArtifactTooLargeError(
                f"{what} {path} is {size:,} bytes, more than the {MAX_ARTIFACT_BYTES:,} this "
                "loader reads (LVM_MAX_ARTIFACT_BYTES); check the URI, or raise the limit",
                path=str(path))
        data = f.read(MAX_ARTIFACT_BYTES + 1)
        if len(data) > MAX_ARTIFACT_BYTES:  # grew while being read
            raise ArtifactTooLargeError(
                f"{what} {path} grew past {MAX_ARTIFACT_BYTES:,} bytes while it was read",
                path=str(path))
        actual = hashlib.sha256(data).hexdigest()
        if expected is not None and actual != expected:
            raise ChecksumMismatchError(
                f"{what} {path}: sha256 mismatch: expected {expected}, actual {actual}. "
                "The file changed or the expected digest is stale; re-upload the file or put "
                "the digest `sha256sum` prints into the spec.",
                path=str(path),
                expected=expected,
                actual=actual,
            )
    finally:
        f.close()
    return path, io.BytesIO(data), actual


# --------------------------------------------------------------------------------------------
# Writing


def atomic_write(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; artifacts are read by other processes
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


