"""Data-parallel scaling: steps/s and samples/s of `divgen train` with 1 and with K processes.

Every configuration trains the same model on the same global batch (each of K
processes computes on B/K rows of it), launched as a user would:
`python -m torch.distributed.run --standalone --nproc_per_node=K -m divgen train …`
(gloo on CPU; NCCL with --device cuda, one GPU per process). The rate is read
from the run's metrics.jsonl; the first logged interval (start-up, warm-up) is
skipped.

On CPU the processes share the machine's cores, so the fair comparison is at a
fixed number of threads: 1 process × T threads against K processes × T/K
threads each (OMP_NUM_THREADS). With T = the number of cores, data parallelism
can at best match one multi-threaded process; it pays off across GPUs or machines.

    python benchmarks/scaling.py [--procs 1,2] [--steps 120] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from divgen.tables import environment, markdown


def measure(procs: int, threads: int, args, root: Path) -> dict:
    """Train once with `procs` processes of `threads` threads each; steps/s after the first logged interval."""
    out = root / f"p{procs}-t{threads}"
    flags = ["train", "--data", args.data, "--divergence", args.divergence, "--width", str(args.width), "--depth", str(args.depth),
             "--batch-size", str(args.batch_size), "--critic-steps", str(args.critic_steps), "--steps", str(args.steps),
             "--log-every", str(args.log_every), "--checkpoint-every", str(10 * args.steps), "--n-samples", "1000", "--no-figures",
             "--device", args.device, "--out", str(out), "--json"]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}", "-m", "divgen"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    proc = subprocess.run(launcher + flags, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{procs} process(es) failed with code {proc.returncode}:\n{proc.stderr[-3000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    timed = rows[1:]  # the first interval includes start-up and warm-up
    # the steps over the seconds they took (not a mean of rates)
    seconds = sum(args.log_every / r["steps_per_s"] for r in timed)
    steps_per_s = len(timed) * args.log_every / seconds
    return {"procs": procs, "threads": threads, "steps_per_s": steps_per_s,
            "samples_per_s": steps_per_s * args.batch_size, "wall_s": wall}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--procs", default="1,2", help="comma-separated numbers of processes (default: 1,2)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads in total, split over the processes (default: all cores)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="cpu (gloo) or cuda (NCCL, one GPU per process)")
    p.add_argument("--steps", type=int, default=120, help="generator steps per run (default: 120)")
    p.add_argument("--log-every", type=int, default=20, help="steps per timed interval (default: 20)")
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=512, help="global batch, the same for every number of processes")
    p.add_argument("--critic-steps", type=int, default=1)
    p.add_argument("--data", default="ring8")
    p.add_argument("--divergence", default="js")
    p.add_argument("--quick", action="store_true", help="30 steps of a small model: checks that the script runs")
    args = p.parse_args()
    if args.quick:  # one launch of 2 processes
        args.steps, args.log_every, args.width, args.depth, args.batch_size, args.procs = 30, 10, 16, 1, 64, "2"
    procs = [int(k) for k in args.procs.split(",")]
    if args.device == "cuda" and torch.cuda.device_count() < max(procs):
        sys.exit(f"--device cuda with {max(procs)} processes needs {max(procs)} GPUs; found {torch.cuda.device_count()}")
    if args.steps < 3 * args.log_every:
        sys.exit("--steps must be at least 3 × --log-every (the first interval is skipped as warm-up)")

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in procs:
            if args.batch_size % k:
                sys.exit(f"--batch-size {args.batch_size} is not divisible by {k} processes")
            threads = max(1, args.threads // k) if args.device == "cpu" else 1
            results.append(measure(k, threads, args, Path(tmp)))
        if args.device == "cpu" and args.threads > 1 and 1 in procs:
            # reference row: one process on one thread, to show what the extra threads buy
            results.append(measure(1, 1, args, Path(tmp)))

    base = results[0]["steps_per_s"]
    backend = "NCCL, one GPU per process" if args.device == "cuda" else "gloo on CPU"
    print(environment())
    print(f"Data-parallel scaling of `divgen train` ({backend}; {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f} at the end).")
    print(f"Model: MLP generator and critic, width {args.width}, depth {args.depth}; {args.divergence} on {args.data}; "
          f"global batch {args.batch_size}, {args.critic_steps} critic step(s) per generator step; "
          f"{args.steps} steps, the first {args.log_every} not timed.")
    if args.device == "cpu":
        print(f"CPU threads are held at {args.threads} in total (OMP_NUM_THREADS = {args.threads} / processes): "
              f"1 process × {args.threads} threads against K processes × {args.threads}/K threads.")
    print()
    print(markdown(["processes", "threads per process", "batch per process", "steps/s", "samples/s", "vs 1 process"],
                   [[r["procs"], r["threads"] if args.device == "cpu" else "—", args.batch_size // r["procs"], f"{r['steps_per_s']:.1f}",
                     f"{r['samples_per_s']:,.0f}", f"{r['steps_per_s'] / base:.2f}×"] for r in results], "rrrrrr"))
    print()
    if len(results) > len(procs):
        print("The last row (1 process × 1 thread) is a reference: what one core does alone.")
    print("samples/s = steps/s × global batch (generated samples per second through the generator step).")


if __name__ == "__main__":
    main()
