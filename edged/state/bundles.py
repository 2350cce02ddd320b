"""A version folder as one byte string (an uncompressed tar) and back, refusing anything but plain files."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from ..errors import EdgedError


class BundleError(EdgedError):
    pass


def pack_folder(folder: Path) -> bytes:
    """The plain files of `folder` (recursively), in name order, with fixed owners and times (same folder, same bytes)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(p for p in Path(folder).rglob("*") if p.is_file() and not p.is_symlink()):
            data = path.read_bytes()
            info = tarfile.TarInfo(path.relative_to(folder).as_posix())
            info.size, info.mode, info.mtime = len(data), 0o600, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def unpack_into(data: bytes, folder: Path, max_files: int = 1000) -> list[str]:
    """Write the files of a bundle under `folder`; a member that is not a plain file inside it is refused."""
    folder = Path(folder)
    names = []
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            members = tar.getmembers()
            if len(members) > max_files:
                raise BundleError(f"bundle holds {len(members)} files, over {max_files}")
            for member in members:
                target = (folder / member.name).resolve()
                if not member.isfile() or member.name.startswith("/") or folder.resolve() not in target.parents:
                    raise BundleError(f"bundle member {member.name[:100]!r} is not a plain file inside the bundle")
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                target.write_bytes(source.read() if source else b"")
                names.append(member.name)
    except (tarfile.TarError, EOFError) as e:
        raise BundleError(f"not a readable bundle: {e}") from None
    return names
