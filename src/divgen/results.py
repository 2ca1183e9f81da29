"""A trained run: its result, finishing it (samples, figures), loading it back, and encoding with it.

Above the run directory (runs.py): this is where a run meets the families that
build its networks and draw its samples. train.py finishes a run here; `sample`,
`encode`, `evaluate` and the benchmarks load one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from divgen import catalog, families, files, limits, recipes, runs, sample_files
from divgen.config import Config, check_recorded, resolve
from divgen.data import Spec
from divgen.errors import InputError


@dataclass(frozen=True)
class TrainResult:
    """A trained run: where it is, how it was configured, how it ended, and its networks."""

    run: Path
    config: Config  # resolved
    metrics: dict  # the last row of metrics.jsonl
    nets: nn.ModuleDict  # "generator", "critic", ... (see families.py), in eval mode
    spec: Spec | None = None  # the data's event shape and classes, as the networks were built for


def read_run_config(run: Path) -> Config:
    """The resolved Config of a run directory; InputError naming config.json if it is wrong."""
    where = str(Path(run) / runs.CONFIG)
    raw = runs.read_config(run)
    try:
        return resolve(Config.from_dict(raw, where))
    except InputError as e:
        raise InputError(str(e) if str(e).startswith(where) else f"{where}: {e}") from None


def load_run(run: Path, checkpoint: Path | None = None) -> TrainResult:
    """A finished or running run directory as a TrainResult: its config, last metrics, and networks
    from its newest good checkpoint (or from `checkpoint`), on the CPU in eval mode."""
    run = Path(run)
    cfg = read_run_config(run)
    state = runs.latest_checkpoint(run) if checkpoint is None else runs.load_checkpoint(checkpoint, runs.CHECKPOINT_KEYS)
    check_recorded(state.get("config"), cfg.to_dict(), str(run / runs.CONFIG))
    spec = Spec(tuple(state["data"]["event_shape"]), state["data"]["n_classes"])
    x = torch.zeros(2, spec.dim)  # the networks' statistics and class frequencies come from the checkpoint
    recipe = recipes.build(cfg, x)
    # the networks and the checkpoint's copy of them, before either is built
    sizes = limits.network_sizes(cfg, spec.event_shape, families.network_count(cfg, recipe), families.label_count(cfg, spec))
    limits.require([(flag, 2 * limits.FLOAT32 * n) for flag, n in sizes.items()], limits.memory_available())
    nets = families.networks(cfg, spec, x, None, recipe, cfg.seed)
    runs.load_networks(nets, state, run)
    rows = runs.read_metrics(run)
    return TrainResult(run, cfg, rows[-1] if rows else {}, nets.eval(), spec)


def encode(trained: TrainResult, x, y, event_shape) -> torch.Tensor:
    """Codes (N, k) of samples x (N, d) by a trained model's encoder: E(x) for a BiGAN, the
    posterior mean for a VAE; a conditional encoder needs the labels y."""
    nets, cfg = trained.nets, trained.config
    if "encoder" not in nets:
        with_encoder = " or ".join(f.name for f in catalog.FAMILIES.values() if f.encoder)
        raise InputError(f"run {str(trained.run)!r} ({cfg.model}) has no encoder; train --model {with_encoder}")
    state = runs.latest_checkpoint(trained.run)
    expected = tuple(state["data"]["event_shape"])
    if tuple(event_shape) != expected:
        raise InputError(f"samples of shape {tuple(event_shape)}, but the model was trained on {expected}")
    encoder = nets["encoder"]
    labels = None
    if encoder.n_classes:
        if y is None:
            raise InputError(f"--model {cfg.model} encodes (x, y): give a .npz with the labels 'y'")
        if int(y.max()) >= encoder.n_classes:
            raise InputError(f"labels up to {int(y.max())}, but the model knows {encoder.n_classes} classes")
        labels = torch.as_tensor(y)
    x = torch.as_tensor(x)
    with torch.no_grad():
        return torch.cat([encoder.code(x[i : i + 4096], None if labels is None else labels[i : i + 4096])
                          for i in range(0, len(x), 4096)])


def finish(out: Path, cfg, ds, nets, recipe, quiet: bool = True) -> None:
    """params.json for a density model, the figures, and samples.npy (streamed), last: a run that has it is
    finished, so one whose figures failed is finished again by --resume."""
    samples = families.draw(nets, min(cfg.n_samples, 2000), cfg.seed + 1)  # the first rows of samples.npy, for the figures
    model = families.density_model(nets)
    if model is not None:
        files.write_json(out / "params.json", model.params())
    if cfg.figures:
        _figures(out, cfg, ds, nets, samples, _critic_t(cfg, nets, recipe))
    sample_files.write(out / "samples.npy", nets, cfg.n_samples, cfg.seed + 1, ds.spec.event_shape, quiet=quiet,
                       flag="--n-samples")


def _critic_t(cfg, nets, recipe):
    """T(x) of the critic as a function of points (N, d), what the critic certifies, for contours; None unless the
    critic judges one data point alone: a conditional or BiGAN critic also takes a label or a code, a latent
    critic (AAE) judges codes, and a PacGAN critic packs of samples."""
    if not recipe.uses_critic or catalog.FAMILIES[cfg.model].compares != "data" or nets["critic"].pack != 1:
        return None
    critic = nets["critic"]

    def critic_t(points):
        with torch.no_grad():
            return recipe.adversarial.critic_t(critic(points.to(next(critic.parameters()).device))).cpu()

    return critic_t


def _figures(out: Path, cfg, ds, nets, samples, critic_t) -> None:
    from divgen import plots  # matplotlib, only when a run draws its figures

    title = f"{cfg.divergence} · {cfg.model} on {Path(cfg.data).name}"
    per_class = None
    if nets["generator"].n_classes and ds.spec.image:
        present = sorted(set(ds.train_labels.tolist()))
        per_class = {k: families.draw(nets, 8, cfg.seed + 2 + k, label=k) for k in present}
    plots.samples_figure(out / "samples.png", ds.train, samples, density=ds.density, critic=critic_t, title=title,
                         event_shape=ds.event_shape, data_labels=ds.train_labels, samples_by_class=per_class)
    plots.losses_figure(out / "losses.png", runs.read_metrics(out), title=f"{cfg.divergence} on {Path(cfg.data).name}")
