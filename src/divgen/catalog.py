"""The names a user types and what each one means: data sets, divergences, model families, their defaults.

Plain data and no torch, so that the command line can build every `--help`
from it in a few milliseconds. The modules that do the work look their rows up
here: `families.py` builds a family's networks from its row, `recipes.py`
builds the objective that `config.resolve` records, `data.py` draws the data
sets, `divergences.py` holds each f-divergence's formulas.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from divgen.errors import InputError

# ------------------------------------------------------------------- data ---
TOY_DATA = ("mog1d", "mog2d", "ring8", "ring8-pacgan", "grid25", "swissroll", "moons")
# digits: scikit-learn's 8×8; mnist1d: generated signals; syndigits: 28×28 digits rendered from
# matplotlib's fonts (syndigits.py). Their held-out rows are the same for every run.
DATASETS = TOY_DATA + ("digits", "mnist1d", "syndigits")

# ------------------------------------------------------------ divergences ---
# f-divergences trained through the f-GAN bound (divergences.py has their formulas); `alpha:A` and
# `js-weighted:PI` take a parameter
F_DIVERGENCES = ("kl", "reverse-kl", "pearson", "neyman", "hellinger", "jeffrey", "js", "gan", "tv",
                 "alpha:A", "js-weighted:PI")
# How each kind of divergence trains and how evaluation estimates it: an f-divergence through a critic
# whose output estimates log p/q (estimated by a classifier); W1 through a Lipschitz critic; MMD by a kernel
# statistic of the samples, with no critic and no variational bound.
DIVERGENCE_KINDS = {"wasserstein": "wasserstein", "mmd": "mmd"}  # every other name: "f-gan"
DIVERGENCES = F_DIVERGENCES + tuple(DIVERGENCE_KINDS)


# Every run is evaluated by these besides its own divergence (evaluate.py).
EVALUATED = ("js", "wasserstein")


# The parameters a float32 run can train with: α·(α − 1) and the critic's cap (objectives.capped, which
# divides by max(|α|, |α − 1|)) stay normal floats, and log π, log(1 − π) stay finite with room to spare.
ALPHA_MAX, ALPHA_GAP, PI_GAP = 100.0, 1e-3, 1e-3


def parse_divergence(name: str) -> tuple[str, float | None]:
    """(name, None) for a fixed name, (head, parameter) for `alpha:A` and `js-weighted:PI`; InputError
    naming the valid names for anything else."""
    if name in DIVERGENCES and ":" not in name:
        return name, None
    head, sep, tail = name.partition(":")
    if sep and head in ("alpha", "js-weighted"):
        try:
            value = float(tail)
        except ValueError:
            raise InputError(f"divergence {name!r}: {tail!r} is not a number") from None
        if not math.isfinite(value):
            raise InputError(f"divergence {name!r}: the parameter must be finite")
        if head == "alpha" and not (ALPHA_GAP <= abs(value) <= ALPHA_MAX and abs(value - 1) >= ALPHA_GAP - 1e-12):
            raise InputError(f"divergence {name!r}: α must lie in [−{ALPHA_MAX:g}, {ALPHA_MAX:g}] and at least "
                             f"{ALPHA_GAP:g} from 0 and 1 (the limits α → 0 and α → 1 are reverse-kl and kl)")
        if head == "js-weighted" and not PI_GAP <= value <= 1 - PI_GAP + 1e-12:
            raise InputError(f"divergence {name!r}: π must lie in [{PI_GAP:g}, {1 - PI_GAP:g}]")
        return head, value
    raise InputError(f"unknown divergence {name!r}; valid: {', '.join(DIVERGENCES)}")


def divergence_kind(name: str) -> str:
    """'f-gan', 'wasserstein' or 'mmd' (a key of recipes.TERMS): how divergence `name` trains; InputError
    for a name that is none of DIVERGENCES."""
    parse_divergence(name)
    return DIVERGENCE_KINDS.get(name, "f-gan")


def mode_covering(name: str) -> bool:
    """Whether f-divergence `name` grows without bound where the model misses data mass: lim f(u)/u = sup dom f*
    = ∞ (kl, jeffrey, pearson, α > 1). False for every other name, the kernel and Wasserstein ones included."""
    head, value = parse_divergence(name)
    return head in ("kl", "jeffrey", "pearson") or (head == "alpha" and value > 1)


GENERATOR_LOSSES = ("auto", "nonsaturating", "minimax", "ratio")
INIT_AT = ("random", "densest", "mean")  # where a density model's mean starts (families.py)
LIPSCHITZ = ("clip", "gp", "sn")
PENALTIES = ("none", "gp", "r1")
# --penalty-weight when not given, by penalty; the penalty measures slopes per standard deviation
# (recipes.Penalty). R1's was chosen on PacGAN's ring and grid (docs/modes.md); a conv critic on digits
# did best with a pull about 64 times stronger (Fréchet distance 50 at 7 and 8, 59–64 at 1, 4 and 16; benchmarks/digits.py)
PENALTY_WEIGHTS = {"none": 0.0, "gp": 10.0, "r1": 0.125}
IMAGE_PENALTY_WEIGHTS = dict(PENALTY_WEIGHTS, r1=8.0)


# -------------------------------------------------------- model families ---
# What the divergence of a run compares, P against Q (families.VIEWS builds each):
COMPARES = {
    "data": "data x against samples G(z)",
    "labelled": "(x, y) against (G(z, y), y): labels enter the generator and the critic",
    "pairs": "(x, E(x)) against (G(z), z): an encoder E learns to invert G",
    "latent": "prior draws z ~ N(0, I) against codes E(x): the aggregate posterior q(z) is matched to the prior",
}
# A family's own loss of a data batch, added to the divergence term (recipes.TERMS):
OWN_LOSSES = {
    "elbo": "−ELBO: the VAE's bound on −log p(x), approximate maximum likelihood",
    "reconstruction": "−log p(x | E(x)): the decoder's reconstruction of the encoder's code",
    "cycle": "--cycle-weight · ‖x − G(E(x))‖² / v: a BiGAN's generator redraws x from its code E(x) (v: the data's "
             "mean variance per coordinate; ALICE's explicit cycle consistency, Li et al. 2017)",
}
# own losses that a weight turns on (--cycle-weight); at weight 0 the objective leaves them out
WEIGHTED_OWN_LOSSES = ("cycle",)


@dataclass(frozen=True)
class Family:
    """A row of the family table: what the family is, what it needs, and its defaults."""

    name: str
    help: str
    defaults: dict = field(default_factory=dict)  # Config fields this family sets differently from GLOBAL
    image_defaults: dict = field(default_factory=dict)  # and on image data, where it differs again
    small_image_defaults: dict = field(default_factory=dict)  # and again on small images (SMALL_IMAGE_PIXELS)
    compares: str | None = "data"  # a key of COMPARES, or None: the family's own loss alone trains it
    own_loss: str | None = None  # a key of OWN_LOSSES
    encoder: str | None = None  # "deterministic" (E(x)) or "gaussian" (q(z | x)); None: no encoder
    decoder: bool = False  # the generator is a decoder with a likelihood p(x | z) (--likelihood)
    # a density model: the `auto` generator loss is minimax, whose gradient at the optimal critic is the
    # gradient of the named divergence even when the model cannot match the data (config.resolve)
    parametric: bool = False
    conditional: bool = False  # needs labels; `sample --label K` draws class K
    images_only: bool = False
    divergences: tuple[str, ...] | None = None  # the only divergence names it accepts (None: any)

    def check(self, spec) -> None:
        """InputError if data of this data.Spec cannot train the family."""
        if self.conditional and not spec.n_classes:
            raise InputError(f"--model {self.name} needs labelled data (a .npz with integer labels 'y', IDX files "
                             "with their labels, an image folder with one sub-folder per class, or digits, mnist1d, "
                             "syndigits)")
        if self.images_only and not spec.image:
            raise InputError(f"--model {self.name} needs image data (N×H×W or N×C×H×W); "
                             f"got samples of shape {spec.event_shape}")

    def objective(self, divergence: str, own_weight: float = 1.0) -> str:
        """The objective this family trains by with `divergence`, as term names of recipes.TERMS joined by
        " + ": its own loss, the divergence's term, or both (an adversarial autoencoder, a BiGAN with its
        cycle). `own_weight` is the weight of a weighted own loss (WEIGHTED_OWN_LOSSES); at 0 it is left out."""
        weighted = self.own_loss in WEIGHTED_OWN_LOSSES
        parts = [self.own_loss] if self.own_loss and (own_weight > 0 or not weighted) else []
        if self.compares is not None:
            parts.append(divergence_kind(divergence))
        return " + ".join(parts)


LR_SCHEDULES = ("constant", "linear")

# Values every family shares unless its row says otherwise.
GLOBAL = dict(divergence="js", steps=3000, critic_steps=1, batch_size=256, lr_generator=2e-4, lr_critic=2e-4, width=128,
              depth=2, noise_dim=8, critic_penalty="none", penalty_weight=None, spectral_norm=False, ema=0.0,
              adam_beta1=0.5, lr_schedule="constant", penalty_every=1, cycle_weight=0.0)
# Chosen on PacGAN's ring and grid for time to quality (benchmarks/speedrun.py, docs/speed.md) and confirmed on
# two held-out mixtures: R1 keeps every mode; 3×128 networks at learning rates 1e-3 that fall linearly to 0,
# which settles the samples without the contraction a moving average of the generator's weights brings (its
# samples are narrower than the data's modes). R1 on every 2nd or 4th critic step (--penalty-every) is faster
# but lost a mode of weight 0.005 on some seeds.
GAN = dict(divergence="js", steps=15_000, critic_steps=1, batch_size=256, lr_generator=1e-3, lr_critic=1e-3,
           width=128, depth=3, critic_penalty="r1", lr_schedule="linear", ema=0.0)
# a GAN on images: conv nets, smaller batches, a larger latent
GAN_ON_IMAGES = dict(batch_size=64, noise_dim=32, steps=4000, width=128, depth=2, lr_generator=2e-4, lr_critic=2e-4,
                     lr_schedule="constant", ema=0.999)
# Images of at most this many pixels per channel take a family's small_image_defaults. Measured at the two ends
# only: 8×8 (digits) and 28×28 (syndigits); 16×16 is where the line was drawn, not a measured edge.
SMALL_IMAGE_PIXELS = 16 * 16
# On small images, learning rates of 1.6e-3 rather than DCGAN's 2e-4: with R1 and a moving average of the generator
# the larger steps are stable there. On digits the conv GAN's Fréchet distance (a mean over 10 draws) went from 1.84
# ± 0.38× the real baseline (worst seed 2.31) to 1.09 ± 0.21× (worst 1.28) on seeds 0–4, every class kept, no
# copying; 1e-3: 1.17 ± 0.29× (worst 1.50); on seeds 0–1, 4e-4: 1.71×, 8e-4: 1.44×, 3.2e-3: 1.34× and 1.76×
# (benchmarks/speedrun.py --data digits --variant; docs/modes.md). The conditional GAN's intra-class distance went
# from 1.5 ± 0.2× the real figure (worst 1.8×) to 1.2 ± 0.1× (worst 1.4×), its conditional accuracy from 96.9%
# (worst 95.5%) to 98.8% (worst 98.6%); over seeds 0–2 × 1 and 2 threads, scored over 10 draws, the conv GAN is at
# 1.2 ± 0.1× (worst 1.3×) and the cGAN at 1.3 ± 0.1× (worst 1.4×) (benchmarks/digits.py --models conv cgan). On 28×28
# syndigits the conv GAN collapsed to one class at 1.6e-3 (seed 0: 1,317× the real baseline, against 35.9× at
# 2e-4; benchmarks/images28.py --models conv; docs/images.md).
GAN_ON_SMALL_IMAGES = dict(lr_generator=1.6e-3, lr_critic=1.6e-3)
# Adam's own β1 = 0.9 rather than the adversarial 0.5: test IWAE on dequantized digits 2.726 against
# 2.753 bits/pixel, better on each of 3 seeds at the same cost (benchmarks/digits.py's procedure)
VAE = dict(divergence="kl", steps=4000, batch_size=128, lr_generator=1e-3, noise_dim=16, adam_beta1=0.9)
# on images a 32-D code and 3,000 steps: test IWAE on dequantized digits 2.503, 2.512 and 2.493 bits/pixel on seeds
# 0–2 (a 16-D code: 2.512 and 2.535 on seeds 0–1; 4,000 steps: 2.509 and 2.549, past the best), about 50 CPU-seconds
# on one thread (benchmarks/digits.py's VAE row; docs/images.md)
VAE_ON_IMAGES = dict(noise_dim=32, steps=3000)

FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("mlp", "an MLP generator x = G(z), z ~ N(0, I)", GAN),
    Family("conv", "a convolutional generator and critic, for images", dict(GAN, **GAN_ON_IMAGES), images_only=True,
           small_image_defaults=GAN_ON_SMALL_IMAGES),
    # A few critic steps per generator step keep the critic near its optimum, so that the minimax gradient
    # is the divergence's; a generator learning rate of 2e-3 moves the mean ~2 data units in ~1000 steps.
    # 5e-3 fitted pearson faster from a random start, but left the demo's 2-D reverse-kl fit between the
    # two modes after 3,000 steps (docs/results.md); the wide adversarial start at the data mean
    # (fit.ADVERSARIAL_STARTS) is what keeps mode-covering fits short. Rates that fall linearly to 0 steadied
    # jeffrey's fit of mog1d a little (worst excess of 5 seeds 0.012, `benchmarks/exact_vs_adversarial.py
    # --divergences jeffrey --seeds 5 --lr-schedule linear`, against 0.016 of 3 at a constant rate, still a
    # miss); the other divergences were not measured with them at these settings, so the rate stays constant.
    Family("gaussian", "a Gaussian N(μ, LLᵀ) with learned μ and L (params.json); a density model",
           dict(divergence="js", steps=3000, critic_steps=5, batch_size=512, lr_generator=2e-3, lr_critic=1e-3,
                width=64, depth=2, lr_schedule="constant"), parametric=True),
    Family("cgan", "a conditional GAN: labels into the generator and the critic (projection for images)",
           GAN, GAN_ON_IMAGES, compares="labelled", conditional=True, small_image_defaults=GAN_ON_SMALL_IMAGES),
    # On images: a spectrally normalized critic keeps the game stable (digits: Fréchet distance 7.7, 14.5 and 5.4× the
    # real baseline on seeds 0–2 without it, 2.1, 1.8 and 1.2× with it), no penalty on the (x, z) pairs, and the cycle
    # loss with a 16-D code keeps the codes informative: on digits (seeds 0–2 × 1 and 2 threads) a linear probe of
    # the codes reads the digit 93.7% of the time (worst 92.2%) and reconstructions keep their class 93.6% (worst
    # 92.2%), against 81.1% and 62.9% with no cycle and an 8-D code; on syndigits (seed 0) the digit probe went
    # from 0.58 to 0.99
    # (benchmarks/digits.py --models bigan; benchmarks/images28.py --models bigan; docs/images.md). On small images it
    # takes the conv GAN's 1.6e-3: on digits (seeds 0–2 × 1 and 2 threads, 10 draws) 1.2 ± 0.1× the real Fréchet
    # distance (worst 1.3×) against 1.7 ± 0.1× (worst 1.8×, one thread) at 2e-4, probe 93.7% (worst 92.2%),
    # reconstructions 95.4% (worst 94.7%).
    Family("bigan", "BiGAN: a generator and an encoder E; the critic tells (x, E(x)) from (G(z), z)",
           GAN, dict(GAN_ON_IMAGES, noise_dim=16, critic_penalty="none", spectral_norm=True, cycle_weight=0.002),
           compares="pairs", own_loss="cycle", encoder="deterministic", small_image_defaults=GAN_ON_SMALL_IMAGES),
    Family("vae", "a variational autoencoder trained on the ELBO (approximate maximum likelihood: kl)", VAE,
           VAE_ON_IMAGES, compares=None, own_loss="elbo", encoder="gaussian", decoder=True, divergences=("kl",)),
    Family("cvae", "a conditional VAE: labels into the encoder and the decoder", VAE,
           VAE_ON_IMAGES, compares=None, own_loss="elbo", encoder="gaussian", decoder=True, conditional=True,
           divergences=("kl",)),
    # Makhzani et al. 2015; with mmd, the Wasserstein autoencoder of Tolstikhin et al. 2018
    Family("aae", "an adversarial autoencoder: a decoder reconstructs x from the code E(x) while a latent critic "
           "matches the codes' distribution q(z) to the prior N(0, I) under the divergence (mmd: WAE)",
           dict(GAN, steps=4000, batch_size=128, lr_generator=1e-3, lr_critic=5e-4, noise_dim=8, width=256,
                lr_schedule="constant", ema=0.999),
           dict(noise_dim=16, width=128, depth=2),
           compares="latent", own_loss="reconstruction", encoder="deterministic", decoder=True),
)}
MODELS = ("auto", *FAMILIES)


# --------------------------------------------------------- two-sample tests ---
# `divgen test --method`: name -> what the statistic is (two_sample.py implements each)
TEST_METHODS = {
    "mmd-agg": "smallest per-kernel permutation p-value: Gaussian MMD² at 6 bandwidths and the energy distance, "
               "one min-p calibrated p-value (default; sees narrow modes and broad shifts)",
    "energy": "unbiased energy distance, permutation p-value",
    "c2st-logit": "mean held-out classifier logit on A minus on B, clipped to |logit| ≤ log n (Gaussian, quadratic "
                  "or MLP classifier), exact permutation p-value",
    "c2st": "held-out classifier accuracy, exact hypergeometric p-value",
    "mmd": "unbiased MMD², Gaussian kernel at the median-heuristic bandwidth, permutation p-value",
}
DEFAULT_TEST = "mmd-agg"
ESTIMATION_METHODS = ("critic", "knn")

# `divgen demo --figure`: name -> what the picture shows (demo.py draws each)
DEMO_FIGURES = {
    "disjoint": "a saturated GAN discriminator gives no gradient across disjoint supports, a WGAN critic does",
    "film": "a 1-D GAN's training as a GIF and a strip",
}
