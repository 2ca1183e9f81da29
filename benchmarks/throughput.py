"""Training-step throughput against an honest hand-written PyTorch GAN loop and against the FLOP limit.

The hand-written loop uses the same tricks divgen does: one critic forward
over real and generated samples together, fused Adam, and no critic weight
gradients in the generator step. Every loop trains the `gan` divergence with
the non-saturating generator loss on ring8, with the same networks, at two
configurations: the toy default (2×128 MLPs, batch 256, 1 critic step) and a
large one (3×512, batch 256, 5 critic steps).

The FLOP limit is measured in the same run, with the same threads: the
matrix products of one hand-written step (forward, input gradients, weight
gradients, at the layers' shapes) run back to back with torch.mm. Their count
of floating-point operations, 2·m·k·n each, is the FLOPs of a step; % of the
limit = (the limit's time per step) / (a loop's time per step). divgen does a
little less work than the count (its generator step reuses the last critic
step's samples), so its percentage is a slight overstatement.

Rows: the hand-written eager loop; `divgen train`; `divgen train --compile`
(torch.compile of the networks); and, as the ceiling of compilation, the
hand-written step compiled whole into one graph (torch.func gradients and
Adam's update written out, then torch.compile). The loops alternate over
several rounds in one process; each figure is the median over rounds, each
ratio the median of per-round ratios (a slow spell of the shared machine
affects both sides of a ratio alike). Compile time (the first steps' extra
time in the first round, with an empty inductor cache, as on a first run) is
reported apart from the steps/s; later rounds reuse the compiled code.

    python benchmarks/throughput.py [--steps 400] [--rounds 5] [--threads N] [--quick]
"""

from __future__ import annotations

import argparse
import os
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
    "toy (2×128, batch 256, 1 critic step)": (128, 2, 256, 1),
    "large (3×512, batch 256, 5 critic steps)": (512, 3, 256, 5),
}
NOISE, DIM = 8, 2  # noise and data (ring8) dimensions
BETAS = (0.5, 0.999)
LR = 2e-4


def mlp(i: int, o: int, width: int, depth: int) -> nn.Sequential:
    layers, d = [], i
    for _ in range(depth):
        layers += [nn.Linear(d, width), nn.ReLU()]
        d = width
    return nn.Sequential(*layers, nn.Linear(d, o))


# ------------------------------------------------------------ the FLOP limit ---
def shapes(i: int, o: int, width: int, depth: int) -> list[tuple[int, int]]:
    """(in, out) of each linear layer of mlp(i, o, width, depth)."""
    dims = [i] + [width] * depth + [o]
    return list(zip(dims, dims[1:]))


def products(layers, rows: int, weights: bool = False, inputs: bool = False, first_input: bool = False) -> list[tuple]:
    """The (m, k, n) matrix products of a pass of `rows` samples through `layers`: the forward, and with
    `weights` the weight gradients, with `inputs` the input gradients (of the first layer too if `first_input`)."""
    out = []
    for j, (i, o) in enumerate(layers):
        out.append((rows, i, o))  # x W: (rows, i) @ (i, o)
        if weights:
            out.append((i, rows, o))  # ∂W = xᵀ g: (i, rows) @ (rows, o)
        if inputs and (j > 0 or first_input):
            out.append((rows, o, i))  # ∂x = g Wᵀ: (rows, o) @ (o, i)
    return out


def step_products(width: int, depth: int, batch: int, critic_steps: int) -> list[tuple]:
    """Every matrix product of one hand-written generator step (with its critic steps)."""
    g, d = shapes(NOISE, DIM, width, depth), shapes(DIM, 1, width, depth)
    critic = products(g, batch) + products(d, 2 * batch, weights=True, inputs=True)  # samples carry no gradient
    generator = products(g, batch, weights=True, inputs=True) + products(d, batch, inputs=True, first_input=True)
    return critic * critic_steps + generator


def flops(prods: list[tuple]) -> float:
    return sum(2.0 * m * k * n for m, k, n in prods)


def limit(prods: list[tuple], steps: int) -> float:
    """Steps/s if a step were its matrix products alone: torch.mm at their shapes, back to back."""
    pairs = [(torch.randn(m, k), torch.randn(k, n)) for m, k, n in prods]
    outs = [torch.empty(m, n) for m, _, n in prods]
    for (a, b), c in zip(pairs, outs):
        torch.mm(a, b, out=c)
    t = time.perf_counter()
    for _ in range(steps):
        for (a, b), c in zip(pairs, outs):
            torch.mm(a, b, out=c)
    return steps / (time.perf_counter() - t)


# ------------------------------------------------------- hand-written loops ---
def handwritten(x: torch.Tensor, width: int, depth: int, batch: int, critic_steps: int, steps: int) -> float:
    """Steps/s of a minimal eager GAN loop after a short warm-up."""
    G, D = mlp(NOISE, DIM, width, depth), mlp(DIM, 1, width, depth)
    opt_g = torch.optim.Adam(G.parameters(), lr=LR, betas=BETAS, fused=True)
    opt_d = torch.optim.Adam(D.parameters(), lr=LR, betas=BETAS, fused=True)
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

    return _timed(step, steps)


def whole_step(x: torch.Tensor, width: int, depth: int, batch: int, critic_steps: int, steps: int) -> tuple[float, float]:
    """(steps/s, compile seconds) of the same step compiled whole: gradients by torch.func, Adam written out,
    one torch.compile graph per step with no autograd engine or optimizer calls in between."""
    from torch.func import functional_call, grad

    G, D = mlp(NOISE, DIM, width, depth), mlp(DIM, 1, width, depth)
    params = [{k: v.detach() for k, v in net.named_parameters()} for net in (G, D)]  # generator, critic
    moments = [{k: (torch.zeros_like(v), torch.zeros_like(v)) for k, v in p.items()} for p in params]
    t = torch.zeros(())

    def adam(p: dict, g: dict, m: dict, t: torch.Tensor) -> None:
        for k in p:
            m1, m2 = m[k]
            m1.lerp_(g[k], 1 - BETAS[0])
            m2.mul_(BETAS[1]).addcmul_(g[k], g[k], value=1 - BETAS[1])
            p[k].sub_(LR * (m1 / (1 - BETAS[0] ** t)) / ((m2 / (1 - BETAS[1] ** t)).sqrt() + 1e-8))

    def loss_d(pd, real, fake):
        v_real, v_fake = functional_call(D, pd, (torch.cat([real, fake]),)).squeeze(-1).split([batch, batch])
        return F.softplus(-v_real).mean() + F.softplus(v_fake).mean()

    def loss_g(pg, pd, z):
        return F.softplus(-functional_call(D, pd, (functional_call(G, pg, (z,)),))).mean()

    @torch.compile
    def step_(pg, pd, real, z):  # real (critic_steps, B, 2), z (critic_steps + 1, B, NOISE)
        t.add_(1)
        for i in range(critic_steps):
            adam(pd, grad(loss_d)(pd, real[i], functional_call(G, pg, (z[i],))), moments[1], t)
        adam(pg, grad(loss_g)(pg, pd, z[-1]), moments[0], t)

    def step():
        step_(*params, x[torch.randint(len(x), (critic_steps, batch))], torch.randn(critic_steps + 1, batch, NOISE))

    start = time.perf_counter()
    step()
    compile_s = time.perf_counter() - start
    return _timed(step, steps), compile_s


def _timed(step, steps: int) -> float:
    for _ in range(10):
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - t)


# ------------------------------------------------------------------- divgen ---
def divgen_loop(width: int, depth: int, batch: int, critic_steps: int, steps: int, compile: bool) -> tuple[float, float]:
    """(steps/s, compile seconds) of `divgen train`, from metrics.jsonl: the rate over its rows after the
    first (warm-up) row, and the first row's extra time over that rate (compilation, first-call work)."""
    block = max(steps // 4, 1)
    # the hand-written loop's step: no critic penalty, no weight averaging (the GAN defaults add both)
    cfg = Config(data="ring8", divergence="gan", generator_loss="nonsaturating", width=width, depth=depth,
                 critic_penalty="none", ema=0.0, batch_size=batch, critic_steps=critic_steps, noise_dim=NOISE, steps=5 * block, log_every=block,
                 checkpoint_every=10 * steps, n_samples=1000, figures=False, compile=compile)
    with tempfile.TemporaryDirectory() as tmp:
        rows = runs.read_metrics(train(cfg, Path(tmp) / "run", quiet=True).run)
    rate = len(rows[1:]) * block / sum(block / r["steps_per_s"] for r in rows[1:])
    return rate, block / rows[0]["steps_per_s"] - block / rate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=400, help="timed generator steps per round at the toy size (the large size runs a tenth)")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds of each loop")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own choice); on a shared "
                   "machine 1 avoids the stalls of threads waiting for a busy core")
    p.add_argument("--quick", action="store_true", help="a few steps, one round, no compiled loops: checks that the script runs")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.steps, args.rounds = 40, 1
    x = data.load("ring8").train
    cache = tempfile.TemporaryDirectory(prefix="divgen-inductor-")  # compile from scratch; removed at exit
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache.name
    for name, (width, depth, batch, critic_steps) in CONFIGS.items():
        steps = args.steps if critic_steps == 1 else max(args.steps // 10, 8)
        prods = step_products(width, depth, batch, critic_steps)
        loops = {
            "FLOP limit: the step's matrix products alone (torch.mm)": lambda: (limit(prods, steps), 0.0),
            "hand-written eager": lambda: (handwritten(x, width, depth, batch, critic_steps, steps), 0.0),
            "`divgen train`": lambda: divgen_loop(width, depth, batch, critic_steps, steps, compile=False),
        }
        if not args.quick:
            loops["`divgen train --compile`"] = lambda: divgen_loop(width, depth, batch, critic_steps, steps, compile=True)
            loops["hand-written, whole step compiled (torch.func)"] = lambda: whole_step(x, width, depth, batch, critic_steps, steps)
        rates = {k: [] for k in loops}
        compile_s = {k: [] for k in loops}
        for _ in range(args.rounds):
            for k, run in loops.items():
                r, c = run()
                rates[k].append(r)
                compile_s[k].append(c)
        base = rates["hand-written eager"]
        peak = statistics.median(rates[next(iter(loops))])
        gflop = flops(prods) / 1e9
        rows = [[k, f"{statistics.median(r):.1f}", f"{statistics.median(a / b for a, b in zip(r, base)):.2f}",
                 f"{statistics.median(r) * gflop:.1f}", f"{100 * statistics.median(r) / peak:.0f}%",
                 f"{compile_s[k][0]:.1f}" if compile_s[k][0] >= 0.05 else "—"]
                for k, r in rates.items()]
        print(f"### {name}\n\n{environment()}  ")
        print(f"gan, non-saturating, ring8; {gflop:.3g} GFLOP per generator step (from the layer shapes); "
              f"median of {args.rounds} alternating rounds{'; --quick: no compiled loops' if args.quick else ''}\n")
        print(markdown(["loop", "steps/s", "× hand-written eager", "GFLOP/s", "% of FLOP limit", "compile or warm-up (first round), s"], rows))
        print()


if __name__ == "__main__":
    main()
