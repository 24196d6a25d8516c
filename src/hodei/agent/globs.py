"""Artifact path patterns, expanded in the work dir when the job ends: `*` and `?` within a
path component, `[abc]` / `[!abc]`, and `**` as a whole component for any number of
directories (`dist/**/*.whl`). Matching never follows a symlink to a directory: what a link
points to is not the job's tree (the link itself may match, and is then checked like any).
"""

from __future__ import annotations

import os
import re
import stat
from fnmatch import fnmatchcase

_META = re.compile(r"[*?[]")


def is_glob(path: str) -> bool:
    return bool(_META.search(path))


def _real_dir(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _names(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def expand(root: str, pattern: str) -> list[str]:
    """The paths under `root` (relative to it, sorted) that `pattern` matches."""
    parts = [p for p in pattern.split("/") if p not in ("", ".")]
    found: set[str] = set()
    seen: set[tuple[str, int]] = set()
    stack = [("", 0)]  # (relative path matched so far, index of the next part)
    while stack:
        rel, i = stack.pop()
        if (rel, i) in seen:  # `**` reaches the same place in several ways
            continue
        seen.add((rel, i))
        if i == len(parts):
            if rel:
                found.add(rel)
            continue
        here = os.path.join(root, rel)
        part, last = parts[i], i == len(parts) - 1
        if part == "**":
            stack.append((rel, i + 1))  # no directory at all
            for name in _names(here) if _real_dir(here) else []:
                child = os.path.join(rel, name)
                if _real_dir(os.path.join(root, child)):
                    stack.append((child, i))
            continue
        if not is_glob(part):
            candidates = [part]
        elif _real_dir(here):
            candidates = [n for n in _names(here) if fnmatchcase(n, part)]
        else:
            candidates = []
        for name in candidates:
            child = os.path.join(rel, name)
            full = os.path.join(root, child)
            if (last and os.path.lexists(full)) or _real_dir(full):
                stack.append((child, i + 1))
    return sorted(found)
