"""Independent small jobs on the machine's cores, each on one intra-op thread.

The critics fitted to fixed samples (critics.py) have matrices too small for
several threads to speed up one of them, but their fits are independent: the
estimators and the report run them side by side here.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from typing import Callable

import torch


def cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def concurrently(jobs: list[tuple[str, Callable[[], object]]], progress=None) -> list:
    """The results of independent jobs, (name, job) pairs, in order, run on the machine's cores, each on
    one intra-op thread.

    Each job has its own random generator and builds its own networks
    (critics.new_critic), so the results are the same bit for bit whatever the
    number of cores. `progress` (progress.Progress) hears of each job, by name,
    as it ends.
    """
    def done(i: int) -> None:
        if progress is not None:
            progress.begin(f"{jobs[i][0]} done")
            progress.update()

    with one_thread():
        workers = min(len(jobs), cores())
        if workers <= 1:
            results = []
            for i, (_, job) in enumerate(jobs):
                results.append(job())
                done(i)
            return results
        with ThreadPoolExecutor(workers) as pool:
            futures = {pool.submit(job): i for i, (_, job) in enumerate(jobs)}
            for future in as_completed(futures):
                done(futures[future])
            return [f.result() for f in futures]


@contextmanager
def one_thread():
    """Run small-network training on one intra-op thread, then restore the setting.

    The critic's matrices are a few thousand by 64: splitting them across
    threads costs more in synchronization than it gains, and on a busy
    machine two threads ran 8× slower than one (measured on 2 shared cores).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
