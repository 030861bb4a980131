"""The user cache of weight files, and verified, atomic downloads into it.

A file reaches its final name only after every byte arrived and its pinned digest matched:
it is streamed to a temporary file in the same folder, checked, then renamed with
``os.replace`` (atomic on one file system). An interrupted or corrupt download leaves nothing.
Progress goes to the log every tenth of the file (every 8 MB when the size is unknown), so
that a first start-up on a server shows what it is waiting for. A cached file found corrupt
later is moved aside (``set_aside``), never deleted and never read again.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.request import urlopen

from xviz.errors import WeightsError

logger = logging.getLogger(__name__)

# Per socket operation (connect, each read), not for the whole file: an unreachable host
# fails within seconds, while a slow but live connection keeps going.
TIMEOUT_S = 5.0
CHUNK_BYTES = 1 << 20
# Progress is logged this often: a tenth of the file, or this many bytes if its size is unknown.
PROGRESS_PARTS = 10
PROGRESS_BYTES = 8 * CHUNK_BYTES


@dataclass(frozen=True)
class PinnedDigest:
    """The digest a file must have: ``algorithm`` ("sha256", "md5") and its hex ``digest``.

    ``digest`` may be a prefix: timm names its files after the first hex digits of their
    sha256 (``xception-43020ad28.pth``), which is all it pins.
    """

    algorithm: str
    digest: str

    def matches(self, hexdigest: str) -> bool:
        return hexdigest.lower().startswith(self.digest.lower())


def cache_dir() -> Path:
    """Where downloaded weights live: ``$XVIZ_CACHE``, else ``~/.cache/xviz``."""
    env = os.environ.get("XVIZ_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "xviz"


def file_digests(path: Path, algorithms: tuple[str, ...] = ("sha256",)) -> dict[str, str]:
    """Hex digests of the file at ``path``, all in one read: ``{"sha256": ..., ...}``."""
    hashers = {name: hashlib.new(name) for name in algorithms}
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            for hasher in hashers.values():
                hasher.update(chunk)
    return {name: hasher.hexdigest() for name, hasher in hashers.items()}


def download(url: str, dest: Path, pinned: PinnedDigest) -> Path:
    """Download ``url`` to ``dest`` if its digest matches ``pinned``; returns ``dest``.

    Raises:
        WeightsError: the server could not be reached or the transfer broke (with the
            reason), or the digest did not match. In every case nothing is left at ``dest``
            nor beside it.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    logger.info("downloading %s to %s", url, dest)
    try:
        hasher = hashlib.new(pinned.algorithm)
        with os.fdopen(fd, "wb") as out, urlopen(url, timeout=TIMEOUT_S) as response:
            total = _content_length(response)
            step = max(total // PROGRESS_PARTS, 1) if total else PROGRESS_BYTES
            done, next_report = 0, step
            while chunk := response.read(CHUNK_BYTES):
                hasher.update(chunk)
                out.write(chunk)
                done += len(chunk)
                if done >= next_report:
                    logger.info("downloading %s: %s", dest.name, _progress(done, total))
                    next_report = (done // step + 1) * step
            out.flush()
            os.fsync(out.fileno())
        if not pinned.matches(hasher.hexdigest()):
            raise WeightsError(
                f"Downloaded {url} but its {pinned.algorithm} is {hasher.hexdigest()}, "
                f"not {pinned.digest}: the file is corrupt or was replaced. Nothing was kept."
            )
        os.replace(tmp, dest)
        logger.info("downloaded %s (%.1f MB, %s verified)", dest, done / 1e6, pinned.algorithm)
    except (OSError, http.client.HTTPException) as e:
        # URLError, timeouts and a full disk are OSErrors; a cut connection is IncompleteRead.
        raise WeightsError(f"Could not download {url}: {e}. Nothing was kept.") from e
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _content_length(response: object) -> int:
    """The size the server announced, or 0 when it did not (or said something else)."""
    headers = getattr(response, "headers", None)
    value = headers.get("Content-Length", "") if headers is not None else ""
    return int(value) if str(value).isdigit() else 0


def _progress(done: int, total: int) -> str:
    if total:
        return f"{done / 1e6:.1f} of {total / 1e6:.1f} MB ({100 * done // total}%)"
    return f"{done / 1e6:.1f} MB"


def set_aside(path: Path) -> Path | None:
    """Rename a corrupt cached file to ``<name>.corrupt-<UTC time>`` beside it, so that it is
    neither read again nor lost; returns the new path, or None if it could not be renamed."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    try:
        os.replace(path, target)
    except OSError as e:
        logger.warning("could not move the corrupt file %s aside: %s", path, e)
        return None
    return target
