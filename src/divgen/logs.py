"""The log of a training run: metrics.jsonl always, a progress bar on a terminal (plain lines
otherwise), TensorBoard if asked. Written by rank 0 only; the other ranks keep a silent log.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from divgen import jsonout, parallel, runs


class MetricsLog:
    """metrics.jsonl always; a progress bar on a terminal, plain lines otherwise; TensorBoard if asked. Rank 0 only."""

    def __init__(self, out: Path, cfg, world: parallel.World, quiet: bool, start: int):
        from tqdm import tqdm

        self.cfg, self.active = cfg, world.main
        self.interactive = self.active and sys.stderr.isatty() and not quiet
        self.plain = self.active and not self.interactive and not quiet
        self.out, self.file, self.last = out, None, {}
        if self.active:
            runs.truncate_metrics(out, start)  # rows after the checkpoint are redone
            self.file = open(out / runs.METRICS, "a")
            rows = runs.read_metrics(out)
            self.last = rows[-1] if rows else {}
        self.bar = tqdm(total=cfg.steps, initial=start, disable=not self.interactive, unit="step",
                        desc=f"{cfg.divergence} on {Path(cfg.data).name}")
        self.writer = None
        if self.active and cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out / runs.TENSORBOARD))
        self.t0, self.since = time.perf_counter(), start

    def row(self, step: int, values: dict, opts: dict) -> None:
        if not self.active:
            return
        now = time.perf_counter()
        row = {"step": step, **values, "steps_per_s": round((step - self.since) / max(now - self.t0, 1e-9), 2)}
        self.t0, self.since, self.last = now, step, row
        self.file.write(jsonout.dumps(row) + "\n")
        self.file.flush()
        if self.writer:
            for key, value in row.items():
                if key != "step":
                    self.writer.add_scalar(key, value, step)
            for side, opt in opts.items():
                self.writer.add_scalar(f"lr_{side}", opt.param_groups[0]["lr"], step)
            self.writer.add_scalar("samples_per_s", row["steps_per_s"] * self.cfg.batch_size, step)
        if self.interactive:
            self.bar.set_postfix(critic=f"{row['critic_loss']:.3f}", gen=f"{row['generator_loss']:.3f}", est=f"{row['estimate']:.3f}")
        elif self.plain and (step % max(self.cfg.log_every, self.cfg.steps // 10) == 0 or step == self.cfg.steps):
            print(f"step {step}/{self.cfg.steps}  critic {row['critic_loss']:.4f}  generator {row['generator_loss']:.4f}  "
                  f"estimate {row['estimate']:.4f}  {row['steps_per_s']:.0f} steps/s", file=sys.stderr)

    def figure(self, step: int, data: torch.Tensor, samples) -> None:
        if self.writer:
            from divgen import plots

            fig = plots.new_figure(5, 4)
            plots.draw_samples(fig.add_subplot(), data.cpu(), samples())
            self.writer.add_figure("samples", fig, step)

    def rewind(self, step: int) -> None:
        """After a rollback to `step`: drop later metric rows and continue from there."""
        if self.active:
            self.file.close()
            runs.truncate_metrics(self.out, step)
            self.file = open(self.out / runs.METRICS, "a")
        self.bar.n = step
        self.t0, self.since = time.perf_counter(), step

    def note(self, text: str) -> None:
        if self.active:
            from tqdm import tqdm

            tqdm.write(f"divgen: warning: {text}", file=sys.stderr)

    def advance(self) -> None:
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
        if self.file:
            self.file.close()
        if self.writer:
            self.writer.close()
