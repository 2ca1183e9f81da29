"""Mode collapse on PacGAN's benchmarks: modes captured, high-quality samples, reverse KL.

Data as in PacGAN (Lin et al. 2018, after VEEGAN): `ring8-pacgan`, 8 Gaussians
with means (cos 2πi/8, sin 2πi/8) and sd 0.01; `grid25`, 25 Gaussians with
means {−4, −2, 0, 2, 4}² and sd 0.05. From 2,500 samples per run
(sample_metrics.mode_stats): a sample is of high quality within 3 sd of its nearest
mode, a mode is captured when it is the nearest mode of a high-quality sample,
and the reverse KL is KL(histogram of the high-quality samples over the modes ‖
the true mixture weights). Mean ± sd over 5 seeds per row.

Rows: each divergence in its plain form (no critic penalty, no weight
averaging, no packing; `wasserstein` with each Lipschitz method), `mmd`, and
divgen's recommended configuration, which is what `divgen train --data D` does
with no flags. The published rows are printed beside as references.

    python benchmarks/modes.py [--seeds 5] [--jobs 2] [--out DIR]
    python benchmarks/modes.py --quick        # one seed, 30 steps: checks that the script runs
    python benchmarks/modes.py --heldout --seeds 1   # every default on two mixtures it was not tuned on
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from divgen import data, families, sample_metrics
from divgen.config import Config
from divgen.tables import environment, markdown
from divgen.train import train

DATA = ("ring8-pacgan", "grid25")
# The plain rows: each divergence alone, with the first release's small networks and schedule
# (2×128, 3,000 steps, learning rates 2e-4), no penalty, no averaging, no packing
SMALL = dict(width=128, depth=2, steps=3000, lr_generator=2e-4, lr_critic=2e-4, ema=0.0, pack=1)
PLAIN = dict(SMALL, critic_penalty="none", spectral_norm=False)
ROWS = {
    "gan (non-saturating)": dict(PLAIN, divergence="gan", generator_loss="nonsaturating"),
    "js": dict(PLAIN, divergence="js"),
    "kl": dict(PLAIN, divergence="kl"),
    "reverse-kl": dict(PLAIN, divergence="reverse-kl"),
    "hellinger": dict(PLAIN, divergence="hellinger"),
    "wasserstein, clip": dict(SMALL, divergence="wasserstein", lipschitz="clip"),
    "wasserstein, gp": dict(SMALL, divergence="wasserstein", lipschitz="gp"),
    "wasserstein, sn": dict(SMALL, divergence="wasserstein", lipschitz="sn"),
    "mmd": dict(SMALL, divergence="mmd", lr_critic=None),  # no critic: no critic learning rate
    "**divgen recommended (every default)**": {},
}
# (modes, high quality %, reverse KL) as published; None where not reported
PUBLISHED = {
    "ring8-pacgan": {"GAN": (6.3, 98.2, 0.45), "PacGAN4": (7.8, 95.9, 0.07), "VEEGAN": (8, 52.9, None)},
    "grid25": {"GAN": (17.3, 94.8, 0.70), "ALI": (24.1, 95.7, 0.14), "PacGAN4": (24.8, 93.6, 0.04), "VEEGAN": (24.6, 40.0, None)},
}


def heldout(root: Path) -> dict:
    """Two mixtures the defaults were not tuned on, as .npy files a user would bring (10,000 rows):
    six Gaussians on a ring of radius 3 (sd 0.03, turned by 0.3 rad), and ten at random places
    in [−5, 5]² with Dirichlet(2) weights (sd 0.1). name -> (file, modes, sd, weights)."""
    import numpy as np

    from divgen.densities import gaussian_mixture

    rng = np.random.default_rng(123)
    angles = np.arange(6) * 2 * np.pi / 6 + 0.3
    sets = {"ring6.npy": (3 * np.stack([np.cos(angles), np.sin(angles)], 1), 0.03, np.ones(6) / 6),
            "mix10.npy": (rng.uniform(-5, 5, size=(10, 2)), 0.1, rng.dirichlet(2 * np.ones(10)))}
    out = {}
    for name, (means, sd, w) in sets.items():
        means, w = torch.tensor(means, dtype=torch.float32), torch.tensor(w, dtype=torch.float32)
        path = root / name
        with torch.random.fork_rng():
            torch.manual_seed(7)
            np.save(path, gaussian_mixture(means, [sd], w).sample((10_000,)).numpy())
        out[name] = (str(path), means, sd, w)
    return out


def one(job) -> dict:
    label, name, seed, root, flags, steps, held = job  # held: (file, modes, sd, weights) of a held-out mixture
    run = Path(root) / (f"{name}-{zlib.crc32(label.encode())}-{seed}" + (f"-{steps}-steps" if steps else ""))
    done = run.with_suffix(".json")
    if done.exists():  # measured by an earlier call with the same --out
        return json.loads(done.read_text())
    torch.set_num_threads(1)  # one process per core
    t0 = time.perf_counter()
    flags = dict(flags, **({"steps": steps} if steps else {}))
    result = train(Config(data=held[0] if held else name, seed=seed, figures=False, n_samples=100, **flags),
                   run, overwrite=True, quiet=True)  # a run left unfinished by an interrupted call restarts
    seconds = time.perf_counter() - t0
    samples = families.draw(result.nets, 2500, seed + 1_000_003)
    if held:
        modes, sd, weights = held[1:]
    else:
        ds = data.load(name, n=2)
        modes, sd, weights = ds.modes, ds.mode_std, ds.mode_weights
    m = sample_metrics.mode_stats(samples, modes, sd, weights=weights)
    out = {"label": label, "data": name, "seed": seed, "modes": m.modes_captured, "n_modes": m.n_modes,
           "hq": 100 * m.high_quality, "rkl": m.reverse_kl, "spread": m.spread, "seconds": seconds}
    done.write_text(json.dumps(out))
    return out


def _pm(values, digits) -> str:
    """mean ± sd over seeds; where some seeds have no value (reverse KL without any high-quality
    sample), how many seeds the figure covers."""
    kept = [v for v in values if v is not None and v == v]
    if not kept:
        return "—"
    sd = statistics.stdev(kept) if len(kept) > 1 else 0.0
    text = f"{statistics.mean(kept):.{digits}f}" + (f" ± {sd:.{digits}f}" if len(kept) > 1 else "")
    return text + (f" ({len(kept)} of {len(values)} seeds)" if len(kept) < len(values) else "")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=2, help="parallel training processes, one thread each (default: 2)")
    ap.add_argument("--rows", help="comma-separated row numbers (1-based) to run (default: all)")
    ap.add_argument("--quick", action="store_true", help="one seed, 30 steps: checks that the script runs")
    ap.add_argument("--out", help="keep the runs and each run's result here; a second call with the same --out "
                                  "reuses the results it finds (more seeds, the table again)")
    ap.add_argument("--heldout", action="store_true",
                    help="instead: every default on two mixtures it was not tuned on, given as .npy files")
    args = ap.parse_args(argv)
    steps = 30 if args.quick else None
    seeds = 1 if args.quick else args.seeds
    rows = list(ROWS.items())
    if args.rows:
        rows = [rows[int(i) - 1] for i in args.rows.split(",")]
    root = args.out or tempfile.mkdtemp(prefix="divgen-modes-")
    Path(root).mkdir(parents=True, exist_ok=True)
    if args.heldout:
        label, flags = list(ROWS.items())[-1]
        jobs = [(label, name, seed, root, flags, steps, held) for name, held in heldout(Path(root)).items()
                for seed in range(seeds)]
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            results = list(pool.map(one, jobs))
        print(environment())
        print(f"every default, {seeds} seeds per mixture, 2,500 samples per run; mean ± sd over seeds\n")
        table = [[f"{name}, {r[0]['n_modes']} modes", _pm([x["modes"] for x in r], 1), _pm([x["hq"] for x in r], 1),
                  _pm([x.get("spread") for x in r], 2), _pm([x["rkl"] for x in r], 3),
                  f"{statistics.mean(x['seconds'] for x in r):.0f}"]
                 for name in dict.fromkeys(j[1] for j in jobs) for r in [[x for x in results if x["data"] == name]]]
        print(markdown(["mixture", "modes captured", "high quality, %", "spread", "reverse KL", "seconds"], table))
        return 0
    # the long runs (every default) first, so that the two workers finish together
    jobs = [(label, name, seed, root, flags, steps, None) for label, flags in reversed(rows) for name in DATA
            for seed in range(seeds)]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(one, jobs))

    print(environment())
    print(f"{seeds} seeds per row, 2,500 samples per run; mean ± sd over seeds; seconds per run (one thread)\n")
    for name in DATA:
        table = []
        for label, _ in rows:
            mine = [r for r in results if r["label"] == label and r["data"] == name]
            n_modes = mine[0]["n_modes"]
            table.append([label, _pm([r["modes"] for r in mine], 1), _pm([r["hq"] for r in mine], 1),
                          _pm([r.get("spread") for r in mine], 2), _pm([r["rkl"] for r in mine], 3),
                          f"{statistics.mean(r['seconds'] for r in mine):.0f}"])
        for label, (modes, hq, rkl) in PUBLISHED[name].items():
            table.append([f"*{label}, published*", f"{modes:g}", f"{hq:g}", "—", "—" if rkl is None else f"{rkl:g}", ""])
        print(f"`{name}` ({n_modes} modes)\n")
        print(markdown(["configuration", "modes captured", "high quality, %", "spread", "reverse KL", "seconds"], table))
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
