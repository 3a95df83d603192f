"""Engine cache: never build the same (graph, profile, settings) twice — in a process, or across
processes when a cache directory is set (`cache_dir=` or FLEXRT_CACHE_DIR)."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading

logger = logging.getLogger(__name__)

_memory: dict[str, bytes] = {}
_lock = threading.Lock()
_stats = {"hits": 0, "misses": 0}


def stats() -> dict[str, int]:
    """Hit and miss counts of this process (tests and the torch.compile backend read them)."""
    return dict(_stats)


def record(hit: bool) -> None:
    """Count a lookup made elsewhere (a build worker's, in its own process)."""
    with _lock:
        _stats["hits" if hit else "misses"] += 1


def get(key: str, cache_dir: str | None, count: bool = True, keep: bool = True) -> bytes | None:
    """The blob stored under `key`, from memory or the cache directory; `count=False` for lookups that
    are not engine builds (a segment's engine key) and stay out of the hit/miss counts; `keep=False`
    for blobs read once (a module-cache entry), not kept in memory."""
    with _lock:
        if key in _memory:
            _stats["hits"] += count
            return _memory[key]
    if cache_dir:
        path = os.path.join(cache_dir, key + ".engine")
        try:
            with open(path, "rb") as f:
                blob = f.read()
        except OSError:
            blob = None
        if blob is not None and len(blob) > 64:
            digest, data = blob[:64].decode("ascii", "replace"), blob[64:]
            if hashlib.sha256(data).hexdigest() == digest:
                with _lock:
                    if keep:
                        _memory[key] = data
                    _stats["hits"] += count
                return data
            logger.warning("engine cache: %s is corrupt; rebuilding it", path)
    with _lock:
        _stats["misses"] += count
    return None


def put(key: str, data: bytes, cache_dir: str | None, keep: bool = True) -> None:
    """Store `data` under `key` in memory (unless `keep=False`) and in the cache directory, if set."""
    if keep:
        with _lock:
            _memory[key] = data
    if not cache_dir:
        return
    try:
        os.makedirs(cache_dir, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(hashlib.sha256(data).hexdigest().encode("ascii"))
            f.write(data)
        os.replace(tmp, os.path.join(cache_dir, key + ".engine"))
    except OSError as e:
        logger.warning("engine cache: could not write to %s (%s); continuing without it", cache_dir, e)
