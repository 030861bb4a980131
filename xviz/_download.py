"""The user cache of weight files, and verified, atomic downloads into it.

A file reaches its final name only after every byte arrived and its pinned digest matched:
it is streamed to a temporary file in the same folder, checked, then renamed with
``os.replace`` (atomic on one file system). An interrupted or corrupt download leaves nothing.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.request import urlopen

from xviz.errors import WeightsError

logger = logging.getLogger(__name__)

# Per socket operation (connect, each read), not for the whole file: an unreachable host
# fails within seconds, while a slow but live connection keeps going.
TIMEOUT_S = 5.0
CHUNK_BYTES = 1 << 20


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
            while chunk := response.read(CHUNK_BYTES):
                hasher.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if not pinned.matches(hasher.hexdigest()):
            raise WeightsError(
                f"Downloaded {url} but its {pinned.algorithm} is {hasher.hexdigest()}, "
                f"not {pinned.digest}: the file is corrupt or was replaced. Nothing was kept."
            )
        os.replace(tmp, dest)
    except (OSError, http.client.HTTPException) as e:
        # URLError, timeouts and a full disk are OSErrors; a cut connection is IncompleteRead.
        raise WeightsError(f"Could not download {url}: {e}. Nothing was kept.") from e
    finally:
        tmp.unlink(missing_ok=True)
    return dest
