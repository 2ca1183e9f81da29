"""Progress of long jobs on stderr: a bar on a terminal, plain lines otherwise (logs, CI, pipes).

Training has its own (logs.MetricsLog, with the losses in each line); this is
for the rest: sampling, evaluation, the fits of `compare`.
"""

from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager


EVERY = 5.0  # seconds between a Progress's plain lines


@contextmanager
def announce(text: str, quiet: bool = False, after: float = 3.0, every: float | None = None):
    """Print `text` on stderr once the block has run for `after` seconds: a job that ends (or is refused)
    sooner prints nothing. With `every`, the line is repeated every `every` seconds after that, with the
    time so far, for work that cannot count its own steps."""
    stop, started = threading.Event(), time.monotonic()

    def speak():
        if stop.wait(after):
            return
        print(text, file=sys.stderr, flush=True)
        while every and not stop.wait(every):
            print(f"{text} ({time.monotonic() - started:.0f} s so far)", file=sys.stderr, flush=True)

    if not quiet:
        threading.Thread(target=speak, daemon=True).start()
    try:
        yield
    finally:
        stop.set()


class Progress:
    """`total` units of work named `desc`. `begin(note)` announces the next piece of work at once
    (plain lines) or in the bar; `update(n)` counts done units, with a plain line at most every
    `every` seconds, so a job that ends quickly prints nothing. A plain line gives the share done and,
    from the pace so far, the time left. `expect(n)` adds n units to the total, for work that is sized
    as it is set up. Jobs on several threads (threads.concurrently) may count into one Progress."""

    def __init__(self, total: int, desc: str, quiet: bool = False, unit: str = "", every: float | None = None):
        self.total, self.desc, self.unit = total, desc, unit
        self.every = EVERY if every is None else every
        self.done, self.started = 0, time.monotonic()
        self.last = self.started
        self.bar = None
        self.plain = not quiet and not sys.stderr.isatty()
        self.lock = threading.Lock()
        if not quiet and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit or "it", file=sys.stderr, leave=False)

    def expect(self, n: int) -> None:
        with self.lock:
            self.total += n
            if self.bar is not None:
                self.bar.total = self.total
                self.bar.refresh()

    def begin(self, note: str) -> None:
        with self.lock:
            if self.bar is not None:
                self.bar.set_postfix_str(note)
            elif self.plain:
                print(f"{self.desc}: {self.done + 1}/{self.total} {note}", file=sys.stderr, flush=True)

    def update(self, n: int = 1) -> None:
        with self.lock:
            self.done += n
            if self.bar is not None:
                self.bar.update(n)
            elif self.plain and time.monotonic() - self.last >= self.every and self.done < self.total:
                self.last = time.monotonic()
                print(f"{self.desc}: {self.done}/{self.total} {self.unit}{self._share()}".rstrip(), file=sys.stderr,
                      flush=True)

    def _share(self) -> str:
        """' (40%, about 12 s left)': the time left at the pace so far."""
        if not self.total:
            return ""
        left = (time.monotonic() - self.started) * (self.total - self.done) / max(self.done, 1)
        return f" ({100 * self.done / self.total:.0f}%, about {left:.0f} s left)"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
