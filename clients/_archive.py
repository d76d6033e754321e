"""Checking and unpacking an exported sub-network's ``.tar`` archive.

Nothing is written until every member has been checked: an archive with an absolute
path, a ``..`` component, a link or a device in it is refused as a whole, so a hostile or
damaged archive cannot write outside the directory it is unpacked into.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import tarfile
from pathlib import Path, PurePosixPath

from clients.errors import ArchiveError

MANIFEST = "manifest.json"


def verify_sha256(data: bytes, expected: str | None) -> None:
    """Check that ``data`` hashes to ``expected`` (hex sha256, from ``X-DVN-Archive-SHA256``).

    Raises:
        ArchiveError: no checksum to compare with, or a mismatch.
    """
    if not expected:
        raise ArchiveError(
            "the server sent the archive without an X-DVN-Archive-SHA256 header, so it "
            "cannot be verified; is the URL a DVN server?"
        )
    actual = hashlib.sha256(data).hexdigest()
    if not hmac.compare_digest(actual, expected.strip().lower()):
        raise ArchiveError(
            f"the archive's sha256 is {actual[:12]}… but the server announced "
            f"{expected[:12]}…: it was damaged in transit; download it again"
        )


def _check_member(member: tarfile.TarInfo) -> PurePosixPath:
    name = PurePosixPath(member.name)
    if member.name.startswith(("/", "\\")) or name.is_absolute():
        raise ArchiveError(f"archive member {member.name!r} has an absolute path; refusing it")
    if ".." in name.parts or "\\" in member.name or ":" in member.name:
        raise ArchiveError(
            f"archive member {member.name!r} points outside the archive; refusing it"
        )
    if not (member.isfile() or member.isdir()):
        raise ArchiveError(
            f"archive member {member.name!r} is a link or special file; a checkpoint archive "
            "holds only regular files"
        )
    return name


def _checkpoint_root(out_dir: Path) -> Path:
    if (out_dir / MANIFEST).is_file():
        return out_dir
    found = sorted(p.parent for p in out_dir.glob(f"*/{MANIFEST}"))
    if len(found) == 1:
        return found[0]
    raise ArchiveError(f"the archive holds no single {MANIFEST}: it is not a DVN checkpoint")


def extract_checkpoint(data: bytes, out_dir: str | Path) -> Path:
    """Unpack the checkpoint archive ``data`` into ``out_dir`` (created if missing).

    Returns:
        The directory holding ``manifest.json``: ``out_dir``, or its one subdirectory
        when the archive wraps the files in a folder.

    Raises:
        ArchiveError: not a tar archive, an unsafe member, or no ``manifest.json``.
    """
    out = Path(out_dir)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            members = [(m, _check_member(m)) for m in tar.getmembers()]
            out.mkdir(parents=True, exist_ok=True)
            root = out.resolve()
            for member, name in members:
                target = out.joinpath(*name.parts)
                if not target.resolve().is_relative_to(root):
                    raise ArchiveError(f"archive member {member.name!r} escapes {out}; refusing it")
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                source = tar.extractfile(member)
                if source is None:
                    raise ArchiveError(f"archive member {member.name!r} cannot be read")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(source.read())
    except tarfile.TarError as e:
        raise ArchiveError(f"the export is not a readable tar archive ({e})") from e
    return _checkpoint_root(out)
