"""Markdown tables: the one helper behind every table divgen and its benchmarks print."""

from __future__ import annotations


def markdown(header: list[str], rows: list[list], align: str = "") -> str:
    """A GitHub markdown table with padded columns.

    `align` has one letter per column, "l" or "r" (default: the first column
    left, the others right). Cells are converted with str().
    """
    align = (align or "l" + "r" * (len(header) - 1)).ljust(len(header), "r")
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)]

    def line(values):
        return "| " + " | ".join(v.ljust(w) if a == "l" else v.rjust(w) for v, w, a in zip(values, widths, align)) + " |"

    rule = "| " + " | ".join("-" * (w - 1) + (":" if a == "r" else "-") for w, a in zip(widths, align)) + " |"
    return "\n".join([line(header), rule, *map(line, cells)])


def environment() -> str:
    """One line naming what a measured table depends on: torch, threads, CPU or GPU, commit."""
    import platform
    import subprocess
    from pathlib import Path

    import torch

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).resolve().parent).stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                               timeout=5, cwd=Path(__file__).resolve().parent).stdout.strip()
        commit += "+changes" if dirty else ""
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or platform.machine()
    return (f"torch {torch.__version__}, {torch.get_num_threads()} threads, {device}, "
            f"python {platform.python_version()}, commit {commit}")
