"""Training-step throughput: divgen's loop against an honest hand-written PyTorch GAN loop.

The hand-written loop uses the same tricks divgen does: one critic forward
over real and generated samples together, fused Adam, and no critic weight
gradients in the generator step. Both train the `gan` divergence with the
non-saturating generator loss on ring8, with the same networks, at two
configurations: the toy default (2×128 MLPs, batch 256, 1 critic step) and a
large one (3×512, batch 256, 5 critic steps). The loops alternate over several
rounds in one process; the median steps/s of each is reported, and the median
of the per-round ratios (each round runs the two loops back to back, so a
slow spell of the shared machine affects both sides of a ratio alike).

    python benchmarks/throughput.py [--steps 300] [--rounds 5] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from divgen import data, runs
from divgen.config import Config
from divgen.tables import environment, markdown
from divgen.train import train

CONFIGS = {  # name: (width, depth, batch, critic steps)
    "toy (2×128, 1 critic step)": (128, 2, 256, 1),
    "large (3×512, 5 critic steps)": (512, 3, 256, 5),
}
NOISE = 8


def mlp(i: int, o: int, width: int, depth: int) -> nn.Sequential:
    layers, d = [], i
    for _ in range(depth):
        layers += [nn.Linear(d, width), nn.ReLU()]
        d = width
    return nn.Sequential(*layers, nn.Linear(d, o))


def handwritten(x: torch.Tensor, width: int, depth: int, batch: int, critic_steps: int, steps: int) -> float:
    """Steps/s of a minimal eager GAN loop after a short warm-up."""
    G, D = mlp(NOISE, x.shape[1], width, depth), mlp(x.shape[1], 1, width, depth)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999), fused=True)
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999), fused=True)
    g_params = list(G.parameters())

    def step():
        for _ in range(critic_steps):
            real = x[torch.randint(len(x), (batch,))]
            with torch.no_grad():
                fake = G(torch.randn(batch, NOISE))
            v_real, v_fake = D(torch.cat([real, fake])).squeeze(-1).split([batch, batch])
            loss_d = F.softplus(-v_real).mean() + F.softplus(v_fake).mean()  # −log D(x) − log(1 − D(G(z)))
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
        loss_g = F.softplus(-D(G(torch.randn(batch, NOISE)))).mean()  # −log D(G(z))
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward(inputs=g_params)
        opt_g.step()

    for _ in range(10):
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - t)


def divgen_loop(width: int, depth: int, batch: int, critic_steps: int, steps: int) -> float:
    """Steps/s of `divgen train` over its timed rows after the first (warm-up) row, from metrics.jsonl."""
    cfg = Config(data="ring8", divergence="gan", generator_loss="nonsaturating", width=width, depth=depth,
                 batch_size=batch, critic_steps=critic_steps, noise_dim=NOISE, steps=steps + steps // 4,
                 log_every=steps // 4, checkpoint_every=10 * steps, n_samples=1000, figures=False)
    with tempfile.TemporaryDirectory() as tmp:
        rows = runs.read_metrics(train(cfg, Path(tmp) / "run", quiet=True).run)
    timed = rows[1:]
    return len(timed) * (steps // 4) / sum((steps // 4) / r["steps_per_s"] for r in timed)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=400, help="timed generator steps per round at the toy size (the large size runs a tenth)")
    p.add_argument("--rounds", type=int, default=9, help="alternating rounds of each loop")
    p.add_argument("--quick", action="store_true", help="a few steps and one round: checks that the script runs")
    args = p.parse_args()
    if args.quick:
        args.steps, args.rounds = 40, 1
    x = data.load("ring8").train
    rows = []
    for name, (width, depth, batch, critic_steps) in CONFIGS.items():
        steps = args.steps if critic_steps == 1 else max(args.steps // 10, 8)
        ours, theirs = [], []
        for _ in range(args.rounds):
            theirs.append(handwritten(x, width, depth, batch, critic_steps, steps))
            ours.append(divgen_loop(width, depth, batch, critic_steps, steps))
        ratio = statistics.median(a / b for a, b in zip(ours, theirs))
        rows.append([name, f"{statistics.median(theirs):.1f}", f"{statistics.median(ours):.1f}", f"{ratio:.2f}"])
    print(environment())
    print(f"gan, non-saturating, batch 256, ring8; median of {args.rounds} alternating rounds\n")
    print(markdown(["configuration", "hand-written eager, steps/s", "divgen train, steps/s", "divgen / hand-written (median of rounds)"], rows))


if __name__ == "__main__":
    main()
