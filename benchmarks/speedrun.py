"""Time to quality on the toy mixtures: how long a default run takes, and when it first meets its threshold.

For each data set, every default (`divgen train --data D`, no flags) beside the
defaults of commit 4be76ef (3×256 networks, 10,000 steps, R1 on every critic
step, learning rates 5e-4, constant, EMA 0.999), in the same call. Each run
keeps a checkpoint every `--check` steps; each checkpoint draws 2,500 fresh
samples (sample_metrics.mode_stats) and is checked against the threshold:
every mode captured, high quality ≥ 98% (ring8-pacgan) or ≥ 95% (the others),
reverse KL ≤ 0.02. The seconds to a checkpoint are the loop's own seconds up to
that step (metrics.jsonl), checkpoints included. At the end of each run the
table gives its quality beside its seconds: the spread of its samples (1 at the
data's: sample_metrics.ModeStats.spread), PRDC coverage against 2,500 fresh
data points, and the default two-sample test's p-value on 2,000 samples
against 2,000 fresh data points.

    python benchmarks/speedrun.py [--seeds 5] [--baseline-seeds 2] [--threads 2] [--jobs 1] [--out DIR]
    python benchmarks/speedrun.py --quick     # one seed, 20 steps: checks that the script runs
    python benchmarks/speedrun.py --data mix10.npy --variant '{"penalty_every": 4}'   # a setting beside the defaults
    python benchmarks/speedrun.py --cli [--rounds 3]   # `divgen train --data D` as a user runs it, and `divgen demo`
    python benchmarks/speedrun.py --data digits --seeds 5 --jobs 2 --threads 1   # the conv GAN on digits only

--cli times the commands themselves (start-up, samples and figures included),
the 4be76ef defaults given as flags, alternating, 2 threads (OMP_NUM_THREADS=2),
on an idle machine: the median over rounds.

ring6 and mix10 are the held-out mixtures of benchmarks/modes.py (--heldout):
the defaults were not tuned on them.

digits is the convolutional GAN on scikit-learn's 8×8 digits (`divgen train
--data digits --model conv`). Its defaults on images differ from those of
4be76ef (R1 at weight 8, 4,000 steps, batches of 64, lr 2e-4, EMA 0.999) only
in the learning rates, now 1.6e-3, so its second row is lr 2e-4. Each checkpoint
draws as many samples as the held-out split and is
checked in the feature space of benchmarks/digits.py (its classifier_row):
Fréchet distance ≤ 1.5× the real train-vs-test distance, with every class
covered. At the end of a run the distance is taken for `--draws` independent
draws of that many samples (each against the same held-out rows): their mean,
their spread from draw to draw, the classes and the data-copying Z.
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

import digits as digit_bench
import modes as mode_bench
from divgen import data, families, metrics, results, sample_metrics, two_sample
from divgen.config import Config
from divgen.tables import environment, markdown
from divgen.train import train

DATA = ("ring8-pacgan", "grid25", "ring6.npy", "mix10.npy", "digits")
THRESHOLD_FD = 1.5  # digits: Fréchet distance ≤ 1.5× the real train-vs-test distance
THRESHOLD_HQ = {"ring8-pacgan": 98.0}  # high quality, %, the others 95
THRESHOLD_HQ_OTHERS = 95.0
THRESHOLD_RKL = 0.02
CONFIGS = {
    "every default": {},
    "4be76ef defaults": dict(width=256, depth=3, steps=10_000, lr_generator=5e-4, lr_critic=5e-4, ema=0.999,
                             critic_penalty="r1", penalty_every=1, lr_schedule="constant"),
}


DIGITS_CONFIGS = {"every default": {}, "4be76ef defaults": dict(lr_generator=2e-4, lr_critic=2e-4)}  # conv on images


def reference(name: str, root: Path, seed: int):
    """(training data for --data, modes, sd, weights, fresh data points never trained on)."""
    if name.endswith(".npy"):
        file, modes, sd, weights = mode_bench.heldout(root)[name]
        return file, modes, sd, weights, data.load(file).holdout  # the 2,000 rows the run holds out
    ds = data.load(name, n=2)
    return name, ds.modes, ds.mode_std, ds.mode_weights, data.sample_toy(name, 2000, 10_000 + seed)


def one(job) -> dict:
    label, name, seed, root, threads, check, overrides, configs, draws, test_rows = job
    run = Path(root) / f"{Path(name).stem}-{zlib.crc32(label.encode())}-{seed}"
    done = run.with_suffix(".json")
    if done.exists():  # measured by an earlier call with the same --out
        return json.loads(done.read_text())
    torch.set_num_threads(threads)
    if name == "digits":
        out = one_digits(label, seed, run, check, overrides, configs, draws)
        done.write_text(json.dumps(out))
        return out
    target, modes, sd, weights, fresh = reference(name, Path(root), seed)
    flags = dict(configs[label], **overrides)
    result, seconds, clock, checkpoints = _trained(
        Config(data=target, seed=seed, checkpoint_every=check, keep_checkpoints=10_000, **flags), run)
    hq_needed = THRESHOLD_HQ.get(name, THRESHOLD_HQ_OTHERS)
    reached, trace = None, []
    for step, nets in checkpoints:
        m = sample_metrics.mode_stats(families.draw(nets, 2500, seed + 1_000_003 + step), modes, sd, weights)
        trace.append((step, round(100 * m.high_quality, 2)))
        if reached is None and m.modes_captured == m.n_modes and 100 * m.high_quality >= hq_needed \
                and m.reverse_kl <= THRESHOLD_RKL:
            reached = {"step": step, "seconds": clock.get(step)}
    samples = families.draw(result.nets, 2500, seed + 1_000_003)
    m = sample_metrics.mode_stats(samples, modes, sd, weights)
    cover = sample_metrics.prdc(fresh, samples, max_samples=None).coverage
    p = two_sample.two_sample_test(samples[:test_rows], fresh[:test_rows], seed=seed).p_value
    out = {"label": label, "data": name, "seed": seed, "modes": m.modes_captured, "n_modes": m.n_modes,
           "hq": 100 * m.high_quality, "rkl": m.reverse_kl, "spread": m.spread, "coverage": cover, "p": p,
           "seconds": seconds, "loop_seconds": max(clock.values()), "steps": result.config.steps, "reached": reached,
           "trace": trace}
    done.write_text(json.dumps(out))
    return out


def _trained(cfg: Config, run: Path):
    """Train cfg into run: (result, wall seconds, loop seconds at each logged step, the (step, networks) of
    every checkpoint after step 0, oldest first, loaded as they are iterated)."""
    t0 = time.perf_counter()
    result = train(cfg, run, overwrite=True, quiet=True)
    seconds = time.perf_counter() - t0

    def checkpoints():
        for ckpt in sorted((run / "checkpoints").glob("step-*.pt"), key=lambda p: int(p.stem[5:])):
            step = int(ckpt.stem[5:])
            if step:
                yield step, result.nets if step == result.config.steps else results.load_run(run, ckpt).nets

    return result, seconds, _loop_clock(run), checkpoints()


def _loop_clock(run: Path) -> dict:
    """Loop seconds at each logged step of a run (metrics.jsonl): the seconds to a checkpoint."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    clock, at, last = {}, 0.0, 0
    for r in (r for r in rows if "steps_per_s" in r):
        at += (r["step"] - last) / r["steps_per_s"]
        clock[r["step"]], last = at, r["step"]
    return clock


def one_digits(label: str, seed: int, run: Path, check: int, overrides: dict, configs, draws: int) -> dict:
    """The conv GAN on digits: the Fréchet distance of every checkpoint's samples, as benchmarks/digits.py scores a row."""
    ds = data.load("digits")
    trained = metrics.classifier(ds)
    baseline = digit_bench.real_baseline(trained, ds, seed)
    flags = dict(configs[label], **overrides)
    result, seconds, clock, checkpoints = _trained(
        Config(data="digits", model="conv", seed=seed, checkpoint_every=check, keep_checkpoints=10_000,
               **dict(flags, figures=False)), run)
    reached, trace = None, []
    for step, nets in checkpoints:
        row = digit_bench.classifier_row(trained, ds, families.draw(nets, len(ds.holdout), seed + 11 + step),
                                         baseline)
        trace.append((step, round(row["fd_ratio"], 2)))
        if reached is None and row["fd_ratio"] <= THRESHOLD_FD and row["covered"] == ds.n_classes:
            reached = {"step": step, "seconds": clock.get(step)}
    rows = [digit_bench.classifier_row(trained, ds, families.draw(result.nets, len(ds.holdout), seed + 11 + 7919 * i),
                                       baseline) for i in range(draws)]
    ratios = [r["fd_ratio"] for r in rows]
    return {"label": label, "data": "digits", "seed": seed, "fd_ratio": statistics.mean(ratios), "fd_ratios": ratios,
            "draw_sd": statistics.stdev(ratios) if draws > 1 else 0.0, "covered": min(r["covered"] for r in rows),
            "n_classes": ds.n_classes, "copy_z": rows[0]["copy_z"], "seconds": seconds,
            "loop_seconds": max(clock.values()), "steps": result.config.steps, "reached": reached, "trace": trace}


def _flags(config: dict) -> list[str]:
    return [x for key, value in config.items() for x in (f"--{key.replace('_', '-')}", str(value))]


def cli(rounds: int, quick: bool) -> int:
    """Seconds of `divgen train --data D` with every default and with the 4be76ef defaults, and of `divgen demo`."""
    import os
    import shutil
    import subprocess
    import sys

    env = dict(os.environ, OMP_NUM_THREADS="2")
    divgen = [sys.executable, "-m", "divgen"]
    extra = ["--steps", "60"] if quick else []
    root = Path(tempfile.mkdtemp(prefix="divgen-speedrun-cli-"))
    seconds: dict = {}
    commands = {(name, label): [*divgen, "train", "--data", name, *_flags(CONFIGS[label]), *extra]
                for name in ("ring8-pacgan", "grid25") for label in CONFIGS}
    commands[("demo", "every default")] = [*divgen, "demo", *(["--quick"] if quick else [])]
    for _ in range(rounds):
        for key, command in commands.items():
            out = root / "run"
            shutil.rmtree(out, ignore_errors=True)
            t0 = time.perf_counter()
            subprocess.run([*command, "--out", str(out)], env=env, check=True, capture_output=True)
            seconds.setdefault(key, []).append(time.perf_counter() - t0)
    shutil.rmtree(root, ignore_errors=True)
    print(environment().replace("1 threads", "2 threads"))
    print(f"median of {rounds} rounds, commands alternating; wall-clock seconds of the whole command\n")
    table = []
    for (name, label), values in seconds.items():
        base = seconds.get((name, "4be76ef defaults"))
        ratio = f"{statistics.median(values) / statistics.median(base):.2f}" if base else ""
        what = "divgen demo" if name == "demo" else f"divgen train --data {name}"
        table.append([what, label, f"{statistics.median(values):.1f}", f"{min(values):.1f}–{max(values):.1f}", ratio])
    print(markdown(["command", "configuration", "seconds", "range", "× 4be76ef"], table))
    return 0


def _pm(values, digits) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f}" + (f" ± {sd:.{digits}f}" if len(values) > 1 else "")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=5, help="seeds of every default (default: 5)")
    ap.add_argument("--baseline-seeds", type=int, default=2, help="seeds of the 4be76ef defaults (default: 2)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads per run (default: 2)")
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time (default: 1; seconds then are an idle "
                                                        "machine's only when jobs × threads ≤ cores)")
    ap.add_argument("--check", type=int, default=500, help="steps between checks (default: 500)")
    ap.add_argument("--variant", type=json.loads, help="a JSON object of Config fields: one more row, every default "
                                                       "but these, with --seeds seeds")
    ap.add_argument("--data", help="comma-separated data sets (default: all of " + ", ".join(DATA) + ")")
    ap.add_argument("--draws", type=int, default=10, help="digits: sample draws scored at the end of a run (default: 10)")
    ap.add_argument("--quick", action="store_true", help="one seed, 20 steps: checks that the script runs")
    ap.add_argument("--cli", action="store_true", help="instead: time the commands a user runs (see above)")
    ap.add_argument("--rounds", type=int, default=3, help="--cli: rounds of every command (default: 3)")
    ap.add_argument("--out", help="keep the runs and each run's result here; a second call with the same --out "
                                  "reuses the results it finds")
    args = ap.parse_args(argv)
    if args.cli:
        return cli(1 if args.quick else args.rounds, args.quick)
    # --quick: Config overrides of every run (a few steps, few samples, no figures)
    overrides, check = (dict(steps=20, n_samples=500, figures=False), 10) if args.quick else ({}, args.check)
    configs, digit_configs = dict(CONFIGS), dict(DIGITS_CONFIGS)
    seeds = {"every default": 1 if args.quick else args.seeds,
             "4be76ef defaults": 1 if args.quick else args.baseline_seeds}
    if args.variant:
        label = "defaults but " + json.dumps(args.variant, sort_keys=True)
        configs[label] = digit_configs[label] = args.variant
        seeds[label] = seeds["every default"]
    names = args.data.split(",") if args.data else DATA
    root = args.out or tempfile.mkdtemp(prefix="divgen-speedrun-")
    Path(root).mkdir(parents=True, exist_ok=True)
    of = {name: digit_configs if name == "digits" else configs for name in names}
    jobs = [(label, name, seed, root, args.threads, check, overrides, of[name], 2 if args.quick else args.draws,
             300 if args.quick else 2000)
            for name in names for label in of[name] for seed in range(seeds[label])]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        done = list(pool.map(one, jobs))

    torch.set_num_threads(args.threads)  # what each run had: the environment line reads it from this process
    print(environment())
    print(f"{args.jobs} run(s) at a time; a check every {check} steps (toy data: on 2,500 fresh samples); mean ± sd "
          "over seeds; 'first met' counts the seeds that met the threshold and the mean loop seconds and steps "
          "until they did\n")
    table = []
    for name in (n for n in names if n != "digits"):
        base = [r for r in done if r["data"] == name and r["label"] == "4be76ef defaults"]
        for label in configs:
            mine = [r for r in done if r["data"] == name and r["label"] == label]
            ratio = statistics.mean(r["seconds"] for r in mine) / statistics.mean(r["seconds"] for r in base)
            worst = min(mine, key=lambda r: r["hq"])
            table.append([f"{name} ({mine[0]['n_modes']} modes)", label, _pm([r["modes"] for r in mine], 1),
                          _pm([r["hq"] for r in mine], 1) + f" (worst {worst['hq']:.1f})",
                          _pm([r["rkl"] for r in mine], 3), _pm([r["spread"] for r in mine], 2),
                          _pm([r["coverage"] for r in mine], 2),
                          f"{sum(r['p'] > 0.05 for r in mine)}/{len(mine)}",
                          _pm([r["seconds"] for r in mine], 0), f"{ratio:.2f}", _first_met(mine)])
    if table:
        print(markdown(["data", "configuration", "modes", "high quality, %", "reverse KL", "spread", "coverage",
                        "p > 0.05", "run seconds", "× 4be76ef", "first met"], table))
    if "digits" in names:
        print(f"\ndigits, the conv GAN: Fréchet distance in the classifier's feature space as a multiple of the real "
              f"train-vs-test distance (threshold ≤ {THRESHOLD_FD:g}× with every class covered); × real: each seed's "
              f"mean over its draws, then mean ± sd over seeds; one draw's sd: the spread of the ratio from draw to "
              f"draw of the same network, averaged over seeds\n")
        print(markdown(["configuration", "× real", "one draw's sd", "worst single draw", "classes", "copying Z",
                        "run seconds", "first met (one draw per check)"],
                       digits_table([r for r in done if r["data"] == "digits"], digit_configs)))
    return 0


def _first_met(mine: list[dict]) -> str:
    hit = [r["reached"] for r in mine if r["reached"]]
    return (f"{len(hit)}/{len(mine)}: {statistics.mean(h['seconds'] for h in hit):.0f} s, "
            f"{statistics.mean(h['step'] for h in hit):.0f} steps" if hit else f"0/{len(mine)}")


def digits_table(done: list[dict], configs) -> list[list[str]]:
    table = []
    for label in configs:
        mine = [r for r in done if r["label"] == label]
        table.append([label, _pm([r["fd_ratio"] for r in mine], 2) + f" (worst seed {max(r['fd_ratio'] for r in mine):.2f})",
                      f"{statistics.mean(r['draw_sd'] for r in mine):.2f}",
                      f"{max(max(r['fd_ratios']) for r in mine):.2f}",
                      _pm([r["covered"] for r in mine], 1), _pm([r["copy_z"] for r in mine], 1),
                      _pm([r["seconds"] for r in mine], 0), _first_met(mine)])
    return table


if __name__ == "__main__":
    raise SystemExit(main())
