"""Start-up times of the command line, and the floor that torch itself sets.

Each command runs as a fresh process; the rows alternate over several rounds
and the median wall time of each is reported. "first step" is the time from
launching `divgen train --steps 1 --log-every 1` to the write of its first
metrics row (the file's modification time); "whole run" is that command to
its exit (checkpoint, samples, no figures). The floor rows are what any
program that trains with torch pays before its first step: importing torch,
then one Adam step on one parameter (torch.optim imports torch._dynamo in its
first step). The last row is `divgen evaluate` of a ring8 run of the GAN
defaults trained for 2,000 steps (trained once, before the rounds; not timed).
`--baseline DIR` adds, in the same rounds, `divgen evaluate` of the same run by
the divgen of another checkout (DIR/src first on PYTHONPATH), e.g. a git worktree
of an earlier commit: the anchor for a change to evaluate.

    python benchmarks/startup.py [--rounds 5] [--quick] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from divgen.tables import environment, markdown

TRAIN = ["train", "--data", "ring8", "--steps", "1", "--log-every", "1", "--n-samples", "10", "--no-figures"]
ADAM_STEP = ("import torch; p = torch.zeros(1, requires_grad=True); opt = torch.optim.Adam([p]); "
             "p.sum().backward(); opt.step()")


def wall(argv: list[str], cwd: str, env: dict | None = None) -> float:
    t = time.perf_counter()
    subprocess.run(argv, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - t


def first_step(cwd: str, k: int) -> tuple[float, float]:
    """(seconds to the first metrics row, seconds to exit) of a one-step `divgen train`."""
    out = Path(cwd) / f"run{k}"
    t0 = time.time()
    total = wall([sys.executable, "-m", "divgen", *TRAIN, "--out", str(out)], cwd)
    return (out / "metrics.jsonl").stat().st_mtime - t0, total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds of each command")
    p.add_argument("--quick", action="store_true", help="one round, no floor rows: checks that the script runs")
    p.add_argument("--baseline", type=Path, help="a checkout of another commit whose `divgen evaluate` is timed beside")
    args = p.parse_args()
    if args.baseline is not None and not (args.baseline / "src" / "divgen").is_dir():
        p.error(f"--baseline {args.baseline}: no src/divgen there")
    rounds = 1 if args.quick else args.rounds
    py = sys.executable
    floors = {
        "python -c pass": [py, "-c", "pass"],
        "floor: python -c 'import torch'": [py, "-c", "import torch"],
        "floor: import torch, one Adam step": [py, "-c", ADAM_STEP],
    }
    commands = {
        **({} if args.quick else floors),
        "divgen --help": [py, "-m", "divgen", "--help"],
        "divgen train --help": [py, "-m", "divgen", "train", "--help"],
    }
    evaluate = f"divgen evaluate (ring8, {'50' if args.quick else '2,000'}-step run)"
    baseline = None
    if args.baseline is not None:
        commit = subprocess.run(["git", "-C", str(args.baseline), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip() or str(args.baseline)
        baseline = (f"{evaluate}, commit {commit}",
                    {**os.environ, "PYTHONPATH": os.pathsep.join([str(args.baseline.resolve() / "src"),
                                                                  os.environ.get("PYTHONPATH", "")])})
    times = {k: [] for k in [*commands, "divgen train: first step", "divgen train --steps 1: whole run", evaluate,
                             *([baseline[0]] if baseline else [])]}
    with tempfile.TemporaryDirectory() as tmp:
        run = str(Path(tmp) / "evaluated")
        subprocess.run([py, "-m", "divgen", "train", "--data", "ring8", "--steps", "50" if args.quick else "2000",
                        "--no-figures", "--out", run], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for k in range(rounds):
            for name, argv in commands.items():
                times[name].append(wall(argv, tmp))
            first, total = first_step(tmp, k)
            times["divgen train: first step"].append(first)
            times["divgen train --steps 1: whole run"].append(total)
            times[evaluate].append(wall([py, "-m", "divgen", "evaluate", run, "--json"], tmp))
            if baseline:
                times[baseline[0]].append(wall([py, "-m", "divgen", "evaluate", run, "--json"], tmp, baseline[1]))
    print(environment())
    print(f"median of {rounds} alternating rounds, each a fresh process\n")
    print(markdown(["command", "seconds"], [[name, f"{statistics.median(t):.2f}"] for name, t in times.items()]))


if __name__ == "__main__":
    main()
