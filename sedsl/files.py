"""Every path sedsl opens, checked in one place: what a spec `use`s, the spec, weights and data
files a user names, the files and folders a command writes. A path that cannot be used raises
`Unusable` with the reason in a few words; each caller turns it into its own error (a
SpecError at the `use`, a ModelError for weights, a usage error for `-o`), so that no symlink
loop, device, FIFO or undecodable name reaches the user as a traceback."""

from __future__ import annotations

import os
import stat
from pathlib import Path


class Unusable(Exception):
    """Why a path cannot be used, in a few words: `cannot read X: <reason>`."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def shown(path: str | Path) -> str:
    """A path as text that prints anywhere: bytes of the name that are not UTF-8 (which Python
    holds as lone surrogates) as `\\xff`."""
    text = str(path)
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate no file system name decodes to
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def resolve(path: Path) -> Path:
    """`path` made absolute, its symlinks followed as far as they lead."""
    try:
        os.fsencode(path)  # a name the OS can be given at all
        return path.resolve()
    except RuntimeError:  # Python < 3.13: "Symlink loop from ..."
        raise Unusable("a symlink loop") from None
    except OSError as err:
        raise Unusable(reason(err)) from None
    except (ValueError, UnicodeError):
        raise Unusable("not a valid path (a NUL byte, or text no file name can hold)") from None


def is_file(path: Path) -> bool:
    """Whether `path` is a regular file (or a symlink to one); False for what cannot be asked."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError, UnicodeError):
        return False


def regular(path: Path) -> os.stat_result:
    """The file's status, if it is a regular file: directories, devices, FIFOs and sockets are
    refused before they are opened (reading /dev/zero never ends; opening a FIFO blocks)."""
    try:
        info = os.stat(path)
    except OSError as err:
        raise Unusable(reason(err)) from None
    except (ValueError, UnicodeError):
        raise Unusable("not a valid path (a NUL byte, or text no file name can hold)") from None
    if stat.S_ISDIR(info.st_mode):
        raise Unusable("it is a directory")
    if not stat.S_ISREG(info.st_mode):
        raise Unusable("not a regular file (a device, FIFO or socket)")
    return info


def read_bytes(path: Path, limit: int) -> bytes:
    """The bytes of a regular file, at most `limit` + 1 of them (the caller refuses more)."""
    regular(path)
    try:
        with open(path, "rb") as f:
            return f.read(limit + 1)
    except OSError as err:
        raise Unusable(reason(err)) from None


def folder_for(path: Path) -> None:
    """Make the folders above `path` that are missing (as `mkdir -p`); a file where a folder
    must be is named."""
    check_folders(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise Unusable(reason(err)) from None


def check_folders(path: Path) -> None:
    """The folders above `path` are folders, as far as they exist."""
    for parent in reversed(path.parents):
        try:
            info = os.stat(parent)
        except FileNotFoundError:
            break  # this one and those below it are made next
        except OSError as err:
            raise Unusable(f"{shown(parent)}: {reason(err)}") from None
        except (ValueError, UnicodeError):
            raise Unusable("not a valid path (a NUL byte, or text no file name can hold)") \
                from None
        if not stat.S_ISDIR(info.st_mode):
            raise Unusable(f"{shown(parent)} is a file, not a folder")


def reason(err: OSError) -> str:
    """An OS error in a few words: its strerror ("Permission denied")."""
    return err.strerror or str(err)
