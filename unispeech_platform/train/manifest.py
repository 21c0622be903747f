"""Checkpoint manifests: which files each rank wrote and their sha256, checked before a restore trusts them.

Every rank writes its part of a checkpoint into its own temporary directory and Ray Train merges the uploads, so
one manifest written by rank 0 could not see the other ranks' files. Each rank therefore writes
``manifest.rank{N}.json`` last, after its own files; rank 0's also records the world size, which tells how many
manifests a complete checkpoint has. A missing manifest means an incomplete upload (or a file deleted); a hash
that differs means a corrupt or modified file. Hashes detect corruption, not an attacker (who can rewrite the
manifest too): what stops a malicious pickle is the weights_only loading in ``safe_load``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from unispeech_platform.runtime.errors import first_line
from unispeech_platform.train.safe_load import UnsafeCheckpointError, safe_torch_load

MANIFEST_PREFIX = "manifest.rank"
FORMAT = 1


def manifest_name(rank: int) -> str:
    return f"{MANIFEST_PREFIX}{rank}.json"


def sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _files(directory: Path) -> list[str]:
    """Relative paths of the regular files below ``directory``, manifests excluded, sorted."""
    out = []
    for root, _, names in os.walk(directory):
        for name in names:
            rel = os.path.relpath(os.path.join(root, name), directory)
            if not name.startswith(MANIFEST_PREFIX):
                out.append(rel.replace(os.sep, "/"))
    return sorted(out)


def write_manifest(directory: str | Path, rank: int, world_size: int, step: int) -> Path:
    """Hash every file this rank wrote into ``directory`` and write its manifest (last, fsynced)."""
    directory = Path(directory)
    doc = {"format": FORMAT, "rank": rank, "world_size": world_size, "step": step,
           "files": {rel: sha256(directory / rel) for rel in _files(directory)}}
    path = directory / manifest_name(rank)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    return path


def _read_manifest(directory: Path, rank: int) -> dict:
    path = directory / manifest_name(rank)
    if not path.is_file():
        raise ValueError(f"{path.name} is missing (an incomplete upload, or written before manifests existed)")
    try:
        doc = json.loads(path.read_text())
        files = doc["files"]
        if not isinstance(files, dict) or doc.get("rank") != rank:
            raise ValueError("unexpected content")
        return doc
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path.name} is unreadable ({e})") from None


def verify_checkpoint(directory: str | Path) -> str | None:
    """Why the checkpoint in ``directory`` cannot be trusted (one line naming the file), or None when every
    rank's manifest is present, every listed file has its recorded sha256, and every ``*.pt`` file unpickles with
    weights_only (tensor data is memory-mapped, not read again)."""
    directory = Path(directory)
    try:
        first = _read_manifest(directory, 0)
        world = int(first["world_size"])
        manifests = [first, *(_read_manifest(directory, r) for r in range(1, world))]
    except (ValueError, TypeError) as e:
        return str(e)
    for doc in manifests:
        for rel, digest in doc["files"].items():
            path = directory / rel
            if not path.is_file():
                return f"{rel} is missing (listed in {manifest_name(doc['rank'])})"
            if sha256(path) != digest:
                return f"{rel}: sha256 differs from {manifest_name(doc['rank'])} (corrupt or modified)"
    for rel in _files(directory):
        if rel.endswith(".pt"):
            try:
                safe_torch_load(directory / rel, "cpu", mmap=True)
            except UnsafeCheckpointError as e:
                return str(e).replace(str(directory / rel), rel)
            except Exception as e:  # a truncated zip, a bad storage: whatever torch says, in one line
                return f"{rel}: unreadable ({first_line(e)})"
    return None
