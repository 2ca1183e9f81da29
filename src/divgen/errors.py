"""The errors a command ends with, and the one-line form of every message the user sees.

Light on purpose (standard library only): the command line imports it before
anything heavy, so that even an interrupted import ends with one line.
"""

from __future__ import annotations

import sys


class InputError(ValueError):
    """Bad input from the user: an unknown name, a malformed file, a clash, a request too large.

    The command line prints its message as one line on stderr and exits with
    code 2; nothing has been written or deleted when it is raised.
    """


class TrainingDiverged(RuntimeError):
    """A loss or a parameter became NaN or infinite (and no rollback was left)."""


class Interrupted(RuntimeError):
    """SIGINT/SIGTERM: a final checkpoint was written; the message says how to resume."""


def first_line(e: BaseException) -> str:
    """The first line of an exception's message, or its type's name when it has none."""
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def one_line(text: str, limit: int = 240) -> str:
    """`text` as one printable line of at most about `limit` characters, cut between words (…)."""
    flat = " ".join("".join(c if c.isprintable() else " " for c in str(text)).split())
    if len(flat) <= limit:
        return flat
    cut = flat.rfind(" ", 0, limit)
    return flat[: cut if cut > limit // 2 else limit].rstrip(" ,;:") + " …"


def os_error_text(e: OSError) -> str:
    """An error of the operating system as words naming its path: "'/x/y': Permission denied"."""
    reason = e.strerror or type(e).__name__
    return f"{str(e.filename)!r}: {reason}" if e.filename else reason


def warn(text: str) -> None:
    """One `divgen: warning: …` line on stderr."""
    print(f"divgen: warning: {one_line(text, 400)}", file=sys.stderr)
