"""The syndigits split: how long it takes to generate and to read back, and how well the image metrics'
classifier separates its classes.

Rows: generating the fixed split (60,000 + 10,000 images, the glyph atlas
included) on the given number of threads; reading it back from the cache
(`syndigits.load`, SHA-256 checked); and the image metrics' classifier, trained
as `divgen evaluate` trains it the first time (metrics.classifier: at most
1,500 Adam steps, the best of its epochs on a validation tenth), with its test
accuracy. `--grid FILE` also saves a PNG of the first 400 training images,
white on black as stored.

    python benchmarks/syndigits.py [--threads 1] [--grid docs/figures/syndigits.png]
    python benchmarks/syndigits.py --quick     # 2,000 + 500 images, no classifier: checks that the script runs
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch

from divgen import data, metrics, syndigits
from divgen.tables import environment, markdown


def grid_png(path: str, x: np.ndarray, cols: int = 20) -> None:
    """x (N, 1, 28, 28) uint8 as one PNG, `cols` images a row, two black pixels between images."""
    from matplotlib.image import imsave

    from divgen.plots import mosaic

    rows = len(x) // cols
    imsave(path, mosaic(x[: rows * cols].astype(np.float32) / 255, (1, 28, 28), rows, cols), cmap="gray", vmin=0,
           vmax=1, format="png")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--grid", default="", help="save a PNG of 400 training images here")
    p.add_argument("--quick", action="store_true", help="2,000 + 500 images and no classifier: checks that it runs")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{environment()}\n")
    if args.quick:
        syndigits.N_TRAIN, syndigits.N_TEST = 2000, 500
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        os.environ["DIVGEN_CACHE"] = cache  # a fresh cache: the first load generates
        t = time.perf_counter()
        split = syndigits.generate(syndigits.N_TRAIN, syndigits.N_TEST)
        rows.append([f"generate {syndigits.N_TRAIN:,} + {syndigits.N_TEST:,} images", f"{time.perf_counter() - t:.1f} s"])
        syndigits.load()  # writes the cache
        t = time.perf_counter()
        ds = data.load("syndigits")
        rows.append(["data.load('syndigits') from the cache", f"{time.perf_counter() - t:.1f} s"])
        assert np.array_equal(ds.holdout.numpy(), split.x_test.reshape(len(split.x_test), -1) / np.float32(255))
        if args.grid:
            grid_png(args.grid, split.x_train[:400])
        if not args.quick:  # the classifier exactly as `divgen evaluate` trains it, into the fresh cache
            t = time.perf_counter()
            trained = metrics.classifier(ds)
            rows.append([f"the image metrics' classifier: test accuracy {100 * trained.test_accuracy:.2f}%",
                         f"{time.perf_counter() - t:.0f} s"])
    print(markdown(["syndigits", "time"], rows))


if __name__ == "__main__":
    main()
