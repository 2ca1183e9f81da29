"""Progress of long jobs on stderr: a bar on a terminal, plain lines otherwise (logs, CI, pipes).

Training has its own (logs.MetricsLog, with the losses in each line); this is
for the rest: sampling, evaluation, the fits of `compare`.
"""

from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager


@contextmanager
def announce(text: str, quiet: bool = False, after: float = 3.0):
    """Print `text` on stderr once the block has run for `after` seconds: a job that ends (or is refused)
    sooner prints nothing."""
    timer = threading.Timer(after, lambda: print(text, file=sys.stderr, flush=True))
    timer.daemon = True
    if not quiet:
        timer.start()
    try:
        yield
    finally:
        timer.cancel()


class Progress:
    """`total` units of work named `desc`. `begin(note)` announces the next piece of work at once
    (plain lines) or in the bar; `update(n)` counts done units, with a plain line at most every
    `every` seconds, so a job that ends quickly prints nothing."""

    def __init__(self, total: int, desc: str, quiet: bool = False, unit: str = "", every: float = 5.0):
        self.total, self.desc, self.unit, self.every = total, desc, unit, every
        self.done, self.started = 0, time.monotonic()
        self.last = self.started
        self.bar = None
        self.plain = not quiet and not sys.stderr.isatty()
        if not quiet and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit or "it", file=sys.stderr, leave=False)

    def begin(self, note: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(note)
        elif self.plain:
            print(f"{self.desc}: {self.done + 1}/{self.total} {note}", file=sys.stderr, flush=True)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.plain and time.monotonic() - self.last >= self.every and self.done < self.total:
            self.last = time.monotonic()
            share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
            print(f"{self.desc}: {self.done}/{self.total} {self.unit}{share}".rstrip(), file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
