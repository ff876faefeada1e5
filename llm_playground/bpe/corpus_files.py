"""Which files a corpus argument list names: files, folders, globs, and globs inside folders.

`expand_inputs(["corpus/", "*.md", "notes.txt"])` returns each file once, in argument order:
- a file is itself;
- a folder is every regular file below it, sorted, leaving out hidden names (a file or folder
  below it whose name starts with "."), unless globs follow it;
- a glob right after a folder (or after another such glob) selects files inside that folder, as
  `bpe train corpus/ "*.md"` reads: a glob without "/" matches file names at any depth (as in a
  .gitignore), one with "/" matches paths relative to the folder (`"docs/**/*.md"`); the folder
  then gives only the files its globs match, not all of its files;
- any other glob (first, after a file, or an absolute one) is resolved against the working
  directory, as a shell would;
- a file named twice (by two globs, a folder and a file inside it, or two spellings of one
  path) is kept once, at its first place: duplicates are found by resolved path.
A missing path, an empty folder, or a glob that matches nothing raises CorpusError naming it.
This module does not read the files.
"""
from __future__ import annotations

import glob
import os
from pathlib import Path


class CorpusError(ValueError):
    """The corpus cannot be used (missing path, invalid UTF-8, nothing to read)."""


def _visible(path: Path, root: Path) -> bool:
    return not any(part.startswith(".") and part not in (".", "..")
                   for part in path.relative_to(root).parts)


def _folder_files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.rglob("*") if f.is_file() and _visible(f, folder))


def _glob_in(folder: Path, pattern: str) -> list[Path]:
    """Files below `folder` that `pattern` selects (see the module docstring)."""
    found = folder.glob(pattern) if "/" in pattern else folder.rglob(pattern)
    return sorted(f for f in found if f.is_file() and _visible(f, folder))


def expand_inputs(inputs) -> list[Path]:
    """Files, folders and globs -> each file once, in argument order (see the module docstring)."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    files: list[Path] = []
    seen: set[Path] = set()

    def add(found) -> None:
        for f in found:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                files.append(f)

    folder: Path | None = None          # the folder that a following glob applies inside
    folder_globbed = False              # whether a glob has selected files of `folder`

    def close_folder() -> None:
        """A folder that no glob followed contributes all of its files."""
        if folder is not None and not folder_globbed:
            found = _folder_files(folder)
            if not found:
                raise CorpusError(f"folder {folder} holds no files")
            add(found)

    for item in map(str, inputs):
        path = Path(item)
        magic = glob.has_magic(item) and not path.exists()
        if magic and folder is not None and not path.is_absolute():
            found = _glob_in(folder, item)
            if not found:
                raise CorpusError(f"no file in folder {folder} matches {item}")
            add(found)
            folder_globbed = True
            continue
        close_folder()
        folder, folder_globbed = None, False
        if path.is_dir():
            folder = path
        elif path.is_file():
            add([path])
        elif magic:
            found = sorted(Path(m) for m in glob.glob(item, recursive=True) if Path(m).is_file())
            if not found:
                raise CorpusError(f"no file matches {item}")
            add(found)
        else:
            raise CorpusError(f"no such file or folder: {item}")
    close_folder()
    return files


__all__ = ["CorpusError", "expand_inputs"]
