"""Independent jobs on the machine's cores: results in order, whatever the number of cores."""

from __future__ import annotations

import pytest
import torch

from divgen import threads


@pytest.mark.parametrize("cores", [1, 2, 4])
def test_results_come_back_in_the_order_of_the_jobs(cores, monkeypatch):
    monkeypatch.setattr(threads, "cores", lambda: cores)
    seen = []

    class Progress:
        def begin(self, note):
            seen.append(note)

        def update(self):
            pass

    jobs = [(f"job {i}", lambda i=i: (i, torch.get_num_threads())) for i in range(5)]
    results = threads.concurrently(jobs, Progress())
    assert [i for i, _ in results] == list(range(5))
    assert all(n == 1 for _, n in results)  # each job on one intra-op thread
    assert sorted(seen) == [f"job {i} done" for i in range(5)]


def test_one_thread_restores_the_setting():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with threads.one_thread():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
