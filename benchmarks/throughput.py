"""Training-step throughput: divgen's loop against a minimal hand-written PyTorch GAN loop.

Same process, same networks (generator and critic: 3 hidden layers of 512
ReLU units), batch 256, 5 critic steps per generator step, the `gan`
divergence with the non-saturating generator loss, on ring8. The two loops
alternate over several rounds and the median steps/s of each is reported.

    python benchmarks/throughput.py [--steps 60] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from divgen import data, runs
from divgen.train import Config, train

WIDTH, DEPTH, BATCH, CRITIC_STEPS, NOISE = 512, 3, 256, 5, 8


def handwritten(x: torch.Tensor, steps: int) -> float:
    """The loop people write from the GAN paper: steps/s after one warm-up step."""

    def net(i, o):
        layers, d = [], i
        for _ in range(DEPTH):
            layers += [nn.Linear(d, WIDTH), nn.ReLU()]
            d = WIDTH
        return nn.Sequential(*layers, nn.Linear(d, o))

    G, D = net(NOISE, x.shape[1]), net(x.shape[1], 1)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    bce = nn.BCEWithLogitsLoss()
    ones, zeros = torch.ones(BATCH, 1), torch.zeros(BATCH, 1)

    def step():
        for _ in range(CRITIC_STEPS):
            real = x[torch.randint(len(x), (BATCH,))]
            fake = G(torch.randn(BATCH, NOISE)).detach()
            loss_d = bce(D(real), ones) + bce(D(fake), zeros)
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
        loss_g = bce(D(G(torch.randn(BATCH, NOISE))), ones)
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()

    step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - t)


def divgen_loop(steps: int) -> float:
    """divgen's own training loop; steps/s over the second half (after warm-up) from metrics.jsonl."""
    cfg = Config(data="ring8", divergence="gan", generator_loss="nonsaturating", width=WIDTH, depth=DEPTH,
                 batch_size=BATCH, critic_steps=CRITIC_STEPS, noise_dim=NOISE, steps=2 * steps,
                 log_every=steps, checkpoint_every=10 * steps, n_samples=1000)
    with tempfile.TemporaryDirectory() as tmp:
        run = train(cfg, Path(tmp) / "run", quiet=True)
        return runs.read_metrics(run)[-1]["steps_per_s"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=60, help="timed generator steps per round")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds of each loop")
    args = p.parse_args()
    torch.manual_seed(0)
    x = data.load("ring8").train
    ours, theirs = [], []
    for _ in range(args.rounds):
        theirs.append(handwritten(x, args.steps))
        ours.append(divgen_loop(args.steps))
    a, b = statistics.median(ours), statistics.median(theirs)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; 3×{WIDTH} ReLU MLPs, batch {BATCH}, "
          f"{CRITIC_STEPS} critic steps per generator step; median of {args.rounds} rounds × {args.steps} steps\n")
    print("| loop | generator steps/s |")
    print("|---|---|")
    print(f"| minimal hand-written PyTorch | {b:.2f} |")
    print(f"| divgen train | {a:.2f} |")
    print(f"| ratio divgen / hand-written | {a / b:.2f} |")


if __name__ == "__main__":
    main()
