"""The run configuration: every field with its one-line help, per-family defaults, validation.

A field whose default is `None` takes its value from the model family's row
(catalog.FAMILIES), then from catalog.GLOBAL. Like the catalog, this module
imports no torch: `--help` is built from it. `resolve(cfg)` returns the fully resolved
Config that is saved as config.json; `--help` shows each family's value.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, fields, replace

from divgen import catalog, limits
from divgen.errors import InputError
from divgen.limits import AT_LEAST_1, FRACTION, NON_NEGATIVE, POSITIVE, SEED


def option(default, help: str, choices=None, kind=None, bounds: limits.Bounds | None = None, flag: bool = True):
    """A Config field whose one-line help becomes its `--help` text; `kind` is its type (int, float, str, bool),
    `bounds` the range of a number (validate), `flag` False for a field that the run records but no flag sets."""
    kind = kind or type(default)
    if kind in (int, float) and bounds is None:
        bounds = limits.FINITE
    return field(default=default, metadata={"help": help, "choices": choices, "kind": kind, "bounds": bounds, "flag": flag})


def flag_name(name: str) -> str:
    """The command-line flag of a Config field: lr_critic -> --lr-critic."""
    return "--" + name.replace("_", "-")


@dataclass
class Config:
    """Everything that defines a training run; saved resolved as config.json."""

    data: str = option("ring8", f"built-in data set ({', '.join(catalog.DATASETS)}; digits' pixels are rescaled from "
                       "0–16 to [0, 1]) or a .npy/.npz/.csv file, one sample per row (a 1-D .npy is N×1; a CSV may have "
                       "a header row and # comment lines; images: N×H×W, N×C×H×W or N×H×W×C in a .npz), Keras' .npz "
                       "(x_train, y_train, x_test, y_test), IDX files (MNIST's: a directory or one images file) or a "
                       "folder of PNG/JPEG images (one sub-folder per class); recorded as an absolute path")
    model: str = option("auto", "model family: auto (conv for image data, mlp otherwise); "
                        + "; ".join(f"{f.name}: {f.help}" for f in catalog.FAMILIES.values()), catalog.MODELS)
    divergence: str | None = option(None, f"divergence to minimize: {', '.join(catalog.DIVERGENCES)}", kind=str)
    objective: str = option("", "the terms the run's loss adds up (recipes.TERMS), recorded by resolve from the family "
                            "and the divergence: e.g. f-gan, elbo, reconstruction + f-gan", flag=False)
    generator_loss: str = option(
        "auto", "f-GAN generator loss: auto is nonsaturating for neural generators and, for density models "
        "(gaussian), ratio with the mode-covering divergences (kl, jeffrey, pearson, alpha above 1) and minimax with "
        "the others; nonsaturating maximizes E_Q[g_f(V(G(z)))] (−E log D(G(z)) for gan), which shares only the "
        "fixed point Q = P and avoids early saturation; minimax minimizes the bound itself, whose gradient at the "
        "optimal critic is the gradient of the named divergence; ratio trains the critic as a logistic classifier "
        "of log p/q (the gan critic, whose loss is bounded) and minimizes −E_Q[f*(f'(p/q))] at its log-ratio, the "
        "same gradient at the optimum without the heavy tails of some divergences' bounds (not tv, whose "
        "f*(f'(u)) = ±½ is flat)", catalog.GENERATOR_LOSSES)
    lipschitz: str = option("gp", "how a wasserstein critic is kept 1-Lipschitz: weight clipping (--clip), the "
                            "gradient penalty (--critic-penalty gp), spectral normalization (--spectral-norm)",
                            catalog.LIPSCHITZ)
    critic_penalty: str | None = option(None, "a penalty added to the critic's loss: gp, the gradient penalty "
                                        "E[(‖∇V(x̂)‖ − 1)²] at random interpolates of real and generated samples "
                                        "(Gulrajani et al. 2017); r1, ½E_P[‖∇V(x)‖²] on real data (Mescheder et al. "
                                        "2018); none", catalog.PENALTIES, kind=str)
    penalty_weight: float | None = option(None, "weight of --critic-penalty, which measures an f-GAN critic's slope per standard "
                                          "deviation of each coordinate, so a weight holds in any units (default: 10 "
                                          "for gp; 0.125 for r1, 8 on images)", kind=float,
                                          bounds=NON_NEGATIVE)
    penalty_every: int | None = option(None, "take the critic penalty on every N-th critic step only, its weight "
                                       "times N (lazy regularization, Karras et al. 2020): the same average pull for "
                                       "1/N of the penalty's cost", kind=int, bounds=AT_LEAST_1)
    spectral_norm: bool | None = option(None, "spectral normalization of every critic layer (Miyato et al. 2018; a conv layer "
                                       "by its norm as an operator on the images, so a W1 critic is 1-Lipschitz)",
                                       kind=bool)
    pack: int = option(1, "PacGAN (Lin et al. 2018): the critic sees PACK samples at a time, real with real and "
                       "generated with generated; --batch-size must be a multiple", bounds=AT_LEAST_1)
    ema: float | None = option(None, "decay of an exponential moving average of the generator's weights, which draws "
                               "every sample (samples.npy, sample, evaluate); 0: off", kind=float, bounds=FRACTION)
    steps: int | None = option(None, "generator steps", kind=int, bounds=AT_LEAST_1)
    critic_steps: int | None = option(None, "critic steps per generator step", kind=int, bounds=AT_LEAST_1)
    batch_size: int | None = option(None, "samples per batch, real and generated", kind=int, bounds=AT_LEAST_1)
    lr_generator: float | None = option(None, "Adam learning rate of the generator", kind=float, bounds=POSITIVE)
    lr_critic: float | None = option(None, "Adam learning rate of the critic", kind=float, bounds=POSITIVE)
    lr_schedule: str | None = option(None, "how the learning rates change over the run: constant, or linear (from "
                                     "the set rate down to 0 at the last step; a resume with more --steps goes on "
                                     "along the longer run's line)", catalog.LR_SCHEDULES, kind=str)
    adam_beta1: float | None = option(None, "Adam's β1, the momentum of every optimizer: 0.5 where a critic plays "
                                      "(DCGAN's setting), Adam's own 0.9 for the likelihood families", kind=float,
                                      bounds=FRACTION)
    width: int | None = option(None, "units per hidden layer, generator and critic", kind=int, bounds=AT_LEAST_1)
    depth: int | None = option(None, "hidden layers, generator and critic", kind=int, bounds=AT_LEAST_1)
    cycle_weight: float | None = option(None, "bigan: weight of the cycle loss ‖x − G(E(x))‖² / v added to the generator "
                                        "side's loss, v the data's mean variance per coordinate: the generator "
                                        "redraws each training sample from its code, which keeps the encoder's codes "
                                        "informative (ALICE's explicit cycle consistency, Li et al. 2017); 0: a plain "
                                        "BiGAN", kind=float, bounds=NON_NEGATIVE)
    init_std: float = option(1.0, "gaussian: initial standard deviation, as a multiple of the data's", bounds=POSITIVE)
    init_at: str = option("random", "gaussian: where the mean starts: random (a training point drawn with --seed), "
                          "densest (the training point where a kernel density of 2,000 of them, with --init-std as its "
                          "bandwidth, is highest: a start in the densest mode, where mode-seeking divergences usually "
                          "have their best fit) or mean (the training mean: near mode-covering fits)",
                          catalog.INIT_AT)
    noise_dim: int | None = option(None, "dimension of the noise z ~ N(0, I) (the latent code of bigan, vae, cvae; "
                                   "gaussian: the data dimension)", kind=int, bounds=AT_LEAST_1)
    likelihood: str = option("auto", "vae, cvae: the decoder's p(x | z): bernoulli (data in [0, 1]) or gaussian with a "
                             "learned variance; auto: bernoulli when every value lies in [0, 1]", ("auto", "bernoulli", "gaussian"))
    clip: float = option(0.01, "weight-clipping bound for --lipschitz clip", bounds=POSITIVE)
    n_data: int = option(10_000, "training samples drawn from a built-in toy density", bounds=limits.Bounds(2))
    holdout: float = option(0.2, "fraction of the data kept aside, never trained on, for `divgen evaluate` (data that "
                            "comes split, IDX t10k files or Keras' x_test, holds out its test rows instead)", bounds=FRACTION)
    seed: int = option(0, "random seed: same seed, same numbers on CPU", bounds=SEED)
    device: str = option("cpu", "cpu, cuda, mps, or auto (cuda if available)", ("auto", "cpu", "cuda", "mps"))
    log_every: int = option(50, "steps between lines of metrics.jsonl", bounds=AT_LEAST_1)
    checkpoint_every: int = option(500, "steps between checkpoints", bounds=AT_LEAST_1)
    keep_checkpoints: int = option(3, "checkpoints kept on disk", bounds=AT_LEAST_1)
    n_samples: int = option(10_000, "samples written to samples.npy at the end (streamed to disk)", bounds=AT_LEAST_1)
    on_nan: str = option("stop", "on a NaN/inf loss or parameter: stop, or roll back to the last checkpoint with "
                         "halved learning rates (≤ 3 times)", ("stop", "rollback"))
    figures: bool = option(True, "draw samples.png and losses.png at the end of the run")
    tensorboard: bool = option(False, "also write TensorBoard event files to RUN/tensorboard")
    bf16: bool = option(False, "bfloat16 autocast for the networks on CUDA")
    compile: bool = option(False, "torch.compile the networks for training (inductor; needs a C++ compiler on CPU); "
                           "compiling takes seconds to a minute, and on CPU a small model runs no faster "
                           "(docs/speed.md); not with a critic penalty (gp, r1)")
    data_sha256: str = option("", "SHA-256 of the data file's bytes, recorded when the run starts ('' for built-in "
                              "data); resuming or evaluating the run refuses a changed file", flag=False)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict, where: str = "config") -> "Config":
        """A Config from a dict such as config.json: unknown keys are ignored, wrong types refused."""
        if not isinstance(raw, dict):
            raise InputError(f"{where}: expected a JSON object, got {type(raw).__name__}")
        values = {}
        for f in fields(cls):
            if f.name in raw:
                values[f.name] = _typed_value(f, raw[f.name], where)
        if raw.get("objective") and "cycle_weight" not in raw:  # a run recorded before the field: no cycle
            values["cycle_weight"] = 0.0
        return cls(**values)


# `train --help` shows the flags in these groups, in this order.
FLAG_GROUPS = {
    "data": ("data", "n_data", "holdout"),
    "model": ("model", "width", "depth", "noise_dim", "likelihood", "init_std", "init_at"),
    "objective": ("divergence", "generator_loss", "lipschitz", "clip", "cycle_weight"),
    "stabilizers": ("critic_penalty", "penalty_weight", "penalty_every", "spectral_norm", "pack", "ema"),
    "optimization": ("steps", "critic_steps", "batch_size", "lr_generator", "lr_critic", "lr_schedule", "adam_beta1", "on_nan", "bf16",
                     "compile"),
    "run and output": ("seed", "device", "log_every", "checkpoint_every", "keep_checkpoints", "n_samples", "figures",
                       "tensorboard"),
}
# Keys that may change when a run is resumed; any other differing key is a conflict.
RESUMABLE = {"steps", "log_every", "checkpoint_every", "keep_checkpoints", "device", "on_nan", "figures", "tensorboard", "bf16", "compile"}


def _typed_value(f, value, where: str):
    kind = f.metadata["kind"]
    ok = (isinstance(value, bool) if kind is bool
          else isinstance(value, (int, float)) and not isinstance(value, bool) if kind is float
          else isinstance(value, int) and not isinstance(value, bool) if kind is int
          else isinstance(value, str))
    if value is None and f.default is None:
        ok = True
    if not ok:
        raise InputError(f"{where}: {f.name} must be {kind.__name__}, got {value!r}")
    return float(value) if kind is float and value is not None else value


def family_default(name: str, family: str, image: bool = False, small: bool = False):
    """The value a field takes for `family` (on image data if `image`, images of at most
    catalog.SMALL_IMAGE_PIXELS pixels per channel if also `small`) when the user does not set it."""
    f = {x.name: x for x in fields(Config)}[name]
    if f.default is not None:
        return f.default
    row = catalog.FAMILIES[family]
    value = row.defaults.get(name, catalog.GLOBAL[name])
    if image:
        value = row.image_defaults.get(name, value)
        if small:
            value = row.small_image_defaults.get(name, value)
    return value


def small_images(spec) -> bool:
    """Whether data of this data.Spec are images small enough for the families' small_image_defaults."""
    return bool(spec.image) and math.prod(spec.event_shape[-2:]) <= catalog.SMALL_IMAGE_PIXELS


def default_text(name: str) -> str:
    """The default of a field for --help: one value, or the families that differ from the most common one."""
    side = math.isqrt(catalog.SMALL_IMAGE_PIXELS)
    values = {fam: family_default(name, fam) for fam in catalog.FAMILIES}
    values |= {f"{fam} on images": family_default(name, fam, image=True)
               for fam, row in catalog.FAMILIES.items() if name in row.image_defaults}
    values |= {f"{fam} on images up to {side}×{side}": family_default(name, fam, image=True, small=True)
               for fam, row in catalog.FAMILIES.items() if name in row.small_image_defaults}
    texts = [repr(v) if isinstance(v, str) else str(v) for v in values.values()]
    common = max(set(texts), key=texts.count)
    others = [f"{t} for {fam}" for fam, t in zip(values, texts) if t != common]
    return common.strip("'") + (f"; {', '.join(others)}" if others else "")


def resolve(cfg: Config, data=None) -> Config:
    """A new Config with every per-family default filled in and every `auto` made concrete; validated.

    `data`, the loaded Dataset, decides `--model auto` (conv for images, mlp
    otherwise) and `--likelihood auto`, and is checked against the family (labels,
    images). Without it, `auto` model means mlp; a resolved config.json needs none.
    """
    model = cfg.model
    if model == "auto":
        model = "conv" if data is not None and data.spec.image else "mlp"
    if model not in catalog.FAMILIES:
        raise InputError(f"--model {cfg.model!r} is not one of {', '.join(catalog.MODELS)}")
    family = catalog.FAMILIES[model]
    out = replace(cfg, model=model)
    image = data is not None and data.spec.image
    small = data is not None and small_images(data.spec)
    if out.divergence is None:
        out = replace(out, divergence=family_default("divergence", model, image, small))
    # wasserstein's Lipschitz method decides the penalty and the normalization it leaves unset
    if catalog.divergence_kind(out.divergence) == "wasserstein":
        if out.critic_penalty is None:  # the Lipschitz method, not the family, decides the penalty
            out = replace(out, critic_penalty="gp" if out.lipschitz == "gp" else "none")
        if out.spectral_norm is None and out.lipschitz == "sn":
            out = replace(out, spectral_norm=True)
    filled = {f.name: family_default(f.name, model, image, small) for f in fields(Config)
              if getattr(out, f.name) is None}
    out = replace(out, **filled)
    if out.penalty_weight is None:
        weights = catalog.IMAGE_PENALTY_WEIGHTS if image else catalog.PENALTY_WEIGHTS
        out = replace(out, penalty_weight=weights.get(out.critic_penalty, 0.0))
    if out.generator_loss == "auto":
        out = replace(out, generator_loss=_auto_generator_loss(family, out.divergence))
    if out.data not in catalog.DATASETS:  # a file: the run must find it again from any directory
        out = replace(out, data=os.path.abspath(os.path.expanduser(out.data)))
    inside = data is not None and bool(((data.train >= 0) & (data.train <= 1)).all())  # Bernoulli's range
    if out.likelihood == "auto" and data is not None and family.decoder:
        out = replace(out, likelihood="bernoulli" if inside else "gaussian")
    if family.divergences is not None and out.divergence not in family.divergences:
        raise InputError(f"--model {model} trains by {family.own_loss or 'its own objective'} "
                         f"(divergence {' or '.join(family.divergences)}), not {out.divergence!r}")
    objective = family.objective(out.divergence, out.cycle_weight)  # chosen here once; recipes.build looks it up
    if out.objective not in ("", objective):
        raise InputError(f"objective {out.objective!r} is not what --model {model} with --divergence {out.divergence} "
                         f"trains by ({objective!r}); was config.json edited?")
    out = replace(out, objective=objective)
    _check_flags(cfg, out, family, image, small)
    if not _has_critic(objective):  # what a critic would use is recorded as off, not as a default never used
        out = replace(out, critic_penalty="none", penalty_weight=0.0, spectral_norm=False)
    if out.critic_penalty == "none":  # nothing to take lazily
        out = replace(out, penalty_every=1)
    if data is not None:
        family.check(data.spec)
        if out.likelihood == "bernoulli" and not inside:
            raise InputError("--likelihood bernoulli needs data in [0, 1]; use --likelihood gaussian")
    return validate(out)


def _auto_generator_loss(family: catalog.Family, divergence: str) -> str:
    """nonsaturating for neural generators. A density model (the gaussian family) takes a loss whose gradient at
    the optimal critic is the divergence's even when the model cannot match the data: ratio for the
    mode-covering divergences (catalog.mode_covering), whose fits are wide, so that the minimax critic's optimum
    f'(p/q) reaches huge values where the data are sparse (−q/p for jeffrey), a sum a trained critic gets wrong;
    ratio's logistic critic has a bounded loss at every point (docs/results.md: jeffrey 6× closer to its exact
    fit). minimax for the others: on mog2d's two equal modes, reverse-kl with ratio had not chosen a mode
    after 3,000 steps, where minimax's noisier critic leaves the saddle between them."""
    if not family.parametric:
        return "nonsaturating"
    return "ratio" if catalog.mode_covering(divergence) else "minimax"


def _has_critic(objective: str) -> bool:
    return any(term in ("f-gan", "wasserstein") for term in objective.split(" + "))


def _check_flags(given: Config, out: Config, family: catalog.Family, image: bool, small: bool) -> None:
    """InputError naming a flag that does nothing, or cannot work, with the resolved family and objective.

    `given` is the config before resolve (None: not set); a value equal to the one resolve
    fills in is never an error, so a resolved config.json passes again."""
    def set_to(name: str, default) -> bool:  # the user chose a value other than what the run would use anyway
        value = getattr(given, name)
        return value is not None and value != default

    why = None
    kind = catalog.divergence_kind(out.divergence)
    if kind == "mmd" and family.compares in ("labelled", "pairs"):
        why = (f"--divergence mmd with --model {family.name}: the kernel statistic compares samples alone, so "
               f"{'the labels' if family.compares == 'labelled' else 'the encoder'} would get no training signal; "
               "use an f-divergence or wasserstein")
    elif not _has_critic(out.objective):
        for name in ("critic_penalty", "penalty_weight", "penalty_every", "spectral_norm", "pack", "critic_steps",
                     "lr_critic"):
            default = {"critic_penalty": "none", "penalty_weight": 0.0, "penalty_every": 1, "spectral_norm": False,
                       "pack": 1}.get(name, family_default(name, family.name, image, small))
            if set_to(name, default):
                why = (f"{flag_name(name)}: --model {family.name} with --divergence {out.divergence} trains "
                       f"by {out.objective}, which has no critic")
                break
    if why is None and kind != "wasserstein" and set_to("lipschitz", "gp"):
        why = f"--lipschitz {given.lipschitz}: only a wasserstein critic is kept Lipschitz (--divergence wasserstein)"
    if why is None and out.lipschitz != "clip" and kind == "wasserstein" and set_to("clip", 0.01):
        why = f"--clip {given.clip:g}: weights are clipped only with --lipschitz clip (now {out.lipschitz})"
    if why is None and kind != "wasserstein" and set_to("clip", 0.01):
        why = f"--clip {given.clip:g}: weights are clipped only with --divergence wasserstein --lipschitz clip"
    if why is None and _has_critic(out.objective) and out.critic_penalty == "none" and set_to("penalty_weight", 0.0):
        why = f"--penalty-weight {given.penalty_weight:g}: the run has no critic penalty (--critic-penalty gp or r1)"
    if why is None and _has_critic(out.objective) and out.critic_penalty == "none" and set_to("penalty_every", 1):
        why = f"--penalty-every {given.penalty_every}: the run has no critic penalty (--critic-penalty gp or r1)"
    if why is None and not family.decoder and set_to("likelihood", "auto"):
        why = f"--likelihood {given.likelihood}: --model {family.name} has no decoder (vae, cvae, aae have one)"
    if why is None and family.own_loss != "cycle" and set_to("cycle_weight", 0.0):
        why = f"--cycle-weight {given.cycle_weight:g}: only --model bigan has a cycle loss (x through E and G)"
    if why is None and not family.parametric and set_to("init_std", 1.0):
        why = "--init-std: only --model gaussian starts from a chosen standard deviation"
    if why is None and not family.parametric and set_to("init_at", "random"):
        why = f"--init-at {given.init_at}: only --model gaussian starts from a chosen point"
    if why is None and given.generator_loss == "ratio" and out.divergence == "tv":
        why = ("--generator-loss ratio with --divergence tv: f*(f'(p/q)) is ±½, flat in the log-ratio, so the "
               "generator would get no gradient; use minimax or nonsaturating")
    if why is None and "f-gan" not in out.objective.split(" + ") and given.generator_loss not in (
            "auto", _auto_generator_loss(family, out.divergence)):
        why = (f"--generator-loss {given.generator_loss}: only an f-divergence's critic term has a choice of "
               f"generator loss; this run trains by {out.objective}")
    if why is not None:
        raise InputError(why)


def validate(cfg: Config) -> Config:
    """Check every field of a resolved Config: type, choices, range (its `bounds`); InputError names the flag."""
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        flag = flag_name(f.name)
        if value is None:
            raise InputError(f"{flag} is not set (resolve the config first)")
        _typed_value(f, value, flag)
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            raise InputError(f"{flag} {value!r} is not one of {', '.join(choices)}")
        if f.metadata["bounds"] is not None:
            f.metadata["bounds"].check(flag, value)
    catalog.parse_divergence(cfg.divergence)
    if cfg.compile and cfg.critic_penalty != "none" and cfg.penalty_weight > 0:
        # the penalty differentiates the critic's gradient; compiled graphs have no double backward
        raise InputError(f"--compile: the {cfg.critic_penalty} penalty needs a second derivative, which compiled "
                         "networks lack; use --critic-penalty none (wasserstein: --lipschitz clip or sn) or drop --compile")
    if cfg.batch_size % cfg.pack:
        raise InputError(f"--pack {cfg.pack}: must divide --batch-size {cfg.batch_size}")
    return cfg


def check_resume(saved: Config, now: Config, run: str = "the run") -> None:
    """InputError listing every field that differs between a run's config and its continuation, except RESUMABLE ones."""
    a, b = saved.to_dict(), now.to_dict()
    conflicts = [f"{k} (run: {a[k]!r}, now: {b[k]!r})" for k in a if k not in RESUMABLE and a[k] != b[k]]
    if conflicts:
        raise InputError(f"--resume {run}: settings conflict with its config.json: {'; '.join(conflicts)}")


def recorded(cfg: Config) -> dict:
    """What a checkpoint records of its run's config: every setting a resumed run may not change."""
    return {k: v for k, v in cfg.to_dict().items() if k not in RESUMABLE}


def check_recorded(recorded: dict | None, now: dict, where: str) -> None:
    """InputError if a run's config.json (`now`, as a dict) says other than the config its checkpoint
    recorded when it was written, in any setting but the RESUMABLE ones and the data file's path: the
    file's digest is compared with the data instead (data_files.fingerprint), so data moved to a new place may
    be pointed at; a digest edited away is caught here. None: nothing recorded."""
    if recorded is None:
        return
    skip = RESUMABLE | {"data"} | ({"data_sha256"} if now.get("data_sha256") else set())
    edited = [f"{k} ({recorded[k]!r} when trained, {now[k]!r} now)" for k in now
              if k in recorded and k not in skip and recorded[k] != now[k]]
    if edited:
        raise InputError(f"{where} differs from the run's checkpoint in {'; '.join(edited)}; was it edited, or the "
                         "checkpoint copied from another run?")

