"""Where a corpus lives: a local directory or any URI pyarrow's filesystems accept (docs/data.md#object-storage).

    loc = locate("s3://bucket/corpus?endpoint_override=http://127.0.0.1:9000&scheme=http")
    loc.join("vocab.json").read_text()

Every read of a corpus (the scan, vocab.json, summary.json, the Ray Data read) goes through a :class:`Location`,
so ``s3://``, ``gs://``, ``hdfs://`` and ``file://`` work wherever a local path does. We use
``pyarrow.fs.FileSystem.from_uri`` rather than a second filesystem library because pyarrow already reads the
Parquet (and Ray Data takes the same filesystem object): credentials and endpoints come from the usual
environment variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, AWS_REGION, ...;
GOOGLE_APPLICATION_CREDENTIALS) or from the URI's query (``endpoint_override``, ``scheme``, ``region``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

_SCHEMES = {"s3": "s3", "gcs": "gs", "hdfs": "hdfs"}  # FileSystem.type_name -> the URI scheme users write


def is_uri(path: str | Path) -> bool:
    """True for ``scheme://...`` (object storage or file://), False for a plain local path."""
    return "://" in str(path)


@dataclass(frozen=True)
class Location:
    """A path inside a pyarrow filesystem; ``str()`` gives the form to show users (a URI for remote stores)."""

    fs: pafs.FileSystem
    path: str

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def __str__(self) -> str:
        if self.is_local:
            return self.path
        return f"{_SCHEMES.get(self.fs.type_name, self.fs.type_name)}://{self.path}"

    def join(self, *names: str) -> Location:
        return Location(self.fs, "/".join([self.path.rstrip("/"), *names]))

    def relative(self, child: str) -> list[str]:
        """The path components of ``child`` (a path inside the same filesystem) below this location."""
        return child[len(self.path.rstrip("/")) + 1 :].split("/")

    def info(self) -> pafs.FileInfo:
        return self.fs.get_file_info(self.path)

    def is_dir(self) -> bool:
        return self.info().type == pafs.FileType.Directory

    def is_file(self) -> bool:
        return self.info().type == pafs.FileType.File

    def walk(self) -> list[pafs.FileInfo]:
        """Every file and directory below (recursive), sorted by path: one listing call on object stores."""
        return sorted(self.fs.get_file_info(pafs.FileSelector(self.path, recursive=True)), key=lambda i: i.path)

    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.path) as f:
            return f.read()

    def read_text(self) -> str:
        return self.read_bytes().decode("utf-8")


def locate(path: str | Path) -> Location:
    """The filesystem and inner path of a local path (made absolute) or a URI; OSError/ValueError if pyarrow
    cannot make a filesystem of it (unknown scheme, bad query parameter)."""
    if is_uri(path):
        fs, inner = pafs.FileSystem.from_uri(str(path))
        return Location(fs, inner.rstrip("/") or inner)
    return Location(pafs.LocalFileSystem(), os.path.abspath(path))


def absolute(path: str) -> str:
    """``path`` as workers on other processes can use it: local paths absolute, URIs unchanged."""
    return path if is_uri(path) else os.path.abspath(path)


def local_copy(path: str) -> str:
    """A local file with the contents of ``path``: the path itself when local, else a copy in the temp dir
    (for readers that only take local files, such as the tokenizer and MLflow's artifact upload)."""
    if not is_uri(path):
        return os.path.abspath(path)
    data = locate(path).read_bytes()
    name = os.path.basename(path.split("?", 1)[0]) or "file"
    out = Path(tempfile.gettempdir()) / "unispeech-remote" / hashlib.sha256(path.encode()).hexdigest()[:16] / name
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, out)
    return str(out)


def is_remote(path: str | Path) -> bool:
    """A URI of another filesystem than the local one (``file://`` is local)."""
    return is_uri(path) and not locate(path).is_local


def is_empty(dest: str) -> bool:
    """Whether ``dest`` holds no file (absent counts as empty)."""
    loc = locate(dest)
    return loc.info().type == pafs.FileType.NotFound or not any(
        i.type == pafs.FileType.File for i in loc.walk())


def publish(local_dir: Path, dest: str, last: tuple[str, ...] = ()) -> int:
    """Upload a finished local directory tree to ``dest`` (a URI); the files named in ``last`` go after all others,
    in that order, so a reader that trusts them (a corpus' vocab.json, summary.json) never sees them before the
    parts they describe. Returns the number of files uploaded. Object stores have no rename, hence the order
    rather than a temp name."""
    loc = locate(dest)
    files = sorted(p for p in Path(local_dir).rglob("*") if p.is_file())
    ordered = [p for p in files if p.name not in last] + [p for name in last for p in files if p.name == name]
    for p in ordered:
        target = loc.join(*p.relative_to(local_dir).parts)
        loc.fs.create_dir(target.path.rsplit("/", 1)[0], recursive=True)
        with open(p, "rb") as src, loc.fs.open_output_stream(target.path) as out:
            shutil.copyfileobj(src, out, 8 << 20)
    return len(ordered)
