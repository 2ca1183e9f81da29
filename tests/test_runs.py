"""runs.py: the run directory's rules, its metrics and its checkpoints, on hand-made directories.

The same rules met through the commands (train, demo, compare) are in
test_hostile.py (--overwrite keeps the user's files) and test_reliability.py
(resume, kills, damaged and malicious checkpoints).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from divgen import parallel, runs
from divgen.errors import InputError
from divgen.files import atomic_write, save_checked


def _state(step: int) -> dict:
    """What CheckpointState.save writes, with a weight that tells the steps apart."""
    return {"nets": {"w": torch.full((3,), float(step))}, "optimizers": {}, "rng": [step], "local_rngs": [[step]],
            "data": {"event_shape": [2], "n_classes": 0}, "world_size": 1}


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ----------------------------------------------------------------- prepare ---
def test_prepare_creates_a_new_directory_and_accepts_an_empty_one(tmp_path):
    assert runs.prepare(tmp_path / "a" / "b").is_dir()
    (tmp_path / "empty").mkdir()
    assert runs.prepare(tmp_path / "empty") == tmp_path / "empty"
    assert _names(tmp_path / "empty") == []  # the write probe is gone


def test_prepare_refuses_a_non_empty_directory_without_overwrite(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="already exists and is not empty.*--overwrite"):
        runs.prepare(tmp_path)
    (tmp_path / runs.CONFIG).write_text("{}")  # a run: train offers --resume, other commands do not
    with pytest.raises(InputError, match="is an existing run; continue it with --resume"):
        runs.prepare(tmp_path, resumable=True)
    with pytest.raises(InputError, match="already exists and is not empty"):
        runs.prepare(tmp_path)
    assert _names(tmp_path) == ["config.json", "notes.txt"] and (tmp_path / "notes.txt").read_text() == "mine"


def test_prepare_refuses_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="exists and is not a directory"):
        runs.prepare(tmp_path / "f", overwrite=True)
    assert (tmp_path / "f").read_text() == "x"


def test_overwrite_removes_only_divgens_files(tmp_path):
    ours = ["config.json", "metrics.jsonl", "samples.npy", "samples.png", "losses.png", "params.json", "eval.json",
            ".metrics.jsonl.abc123.tmp", "checkpoints/step-00000010.pt", "checkpoints/step-00000020.pt.corrupt",
            "checkpoints/.step-00000030.pt.x1y2.tmp", "tensorboard/events.out.tfevents.1.host"]
    users = ["notes.txt", "config.json.bak", "checkpoints/mine.pt", "checkpoints/step-1.txt", "other/step-00000010.pt",
             "old-samples.npy"]
    for name in ours + users:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    runs.prepare(tmp_path, overwrite=True)
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert left == sorted(users)
    assert all((tmp_path / name).read_text() == name for name in users)
    assert not (tmp_path / runs.TENSORBOARD).exists()  # divgen's folder, left empty: removed
    assert (tmp_path / runs.CHECKPOINTS).is_dir()  # it holds the user's files: kept


def test_remove_touches_only_the_given_patterns(tmp_path):
    for name in ("a.json", "b.json", ".a.json.q.tmp", "c.txt"):
        (tmp_path / name).write_text(name)
    runs.remove(tmp_path, ("a.json",))
    assert _names(tmp_path) == ["b.json", "c.txt"]


# ----------------------------------------------------------- config, metrics ---
def test_read_config_refuses_what_is_not_a_run(tmp_path):
    with pytest.raises(InputError, match="is not a divgen run directory"):
        runs.read_config(tmp_path)
    (tmp_path / runs.CONFIG).write_text('{"data": "ring8",')
    with pytest.raises(InputError, match="config.json' is not valid JSON"):
        runs.read_config(tmp_path)
    (tmp_path / runs.CONFIG).write_text('{"data": "ring8"}')
    assert runs.read_config(tmp_path) == {"data": "ring8"}


def test_read_metrics_skips_a_line_cut_by_a_kill(tmp_path, capsys):
    assert runs.read_metrics(tmp_path) == []
    (tmp_path / runs.METRICS).write_text('{"step": 5}\n\n{"step": 10}\n{"step": 1')
    assert [r["step"] for r in runs.read_metrics(tmp_path)] == [5, 10]
    assert "line 4: not a JSON object; skipped" in capsys.readouterr().err


def test_truncate_metrics_keeps_the_rows_up_to_the_step(tmp_path):
    rows = [{"step": s, "estimate": s / 10} for s in range(5, 35, 5)]
    (tmp_path / runs.METRICS).write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 3')
    runs.truncate_metrics(tmp_path, 15)
    assert runs.read_metrics(tmp_path) == rows[:3]
    assert (tmp_path / runs.METRICS).read_text().endswith("}\n")  # the cut line is gone, the file ends whole
    runs.truncate_metrics(tmp_path, 0)
    assert (tmp_path / runs.METRICS).read_text() == ""


# ------------------------------------------------------------- checkpoints ---
def test_save_checkpoint_keeps_the_newest(tmp_path):
    for step in (0, 10, 20, 30, 40):
        runs.save_checkpoint(tmp_path, step, _state(step), keep=2)
    assert [p.name for p in runs.checkpoints(tmp_path)] == ["step-00000030.pt", "step-00000040.pt"]
    state = runs.load_checkpoint(runs.checkpoints(tmp_path)[-1], runs.CHECKPOINT_KEYS)
    assert state["step"] == 40 and torch.equal(state["nets"]["w"], torch.full((3,), 40.0))


def test_checkpoints_are_listed_by_step(tmp_path):
    for step in (9, 100, 20):
        runs.save_checkpoint(tmp_path, step, _state(step), keep=10)
    assert [runs.load_checkpoint(p)["step"] for p in runs.checkpoints(tmp_path)] == [9, 20, 100]


def test_a_checkpoint_needs_its_step(tmp_path):
    path = save_checked(tmp_path / "step-00000001.pt", _state(1))  # digest-checked, but no step
    with pytest.raises(InputError, match="is not a divgen checkpoint"):
        runs.load_checkpoint(path)


def _three(run: Path) -> list[Path]:
    for step in (0, 10, 20):
        runs.save_checkpoint(run, step, _state(step), keep=10)
    return runs.checkpoints(run)


def test_latest_checkpoint_skips_a_damaged_newest_one(tmp_path, capsys):
    found = _three(tmp_path)
    assert runs.latest_checkpoint(tmp_path)["step"] == 20
    found[-1].write_bytes(found[-1].read_bytes()[:200])
    state = runs.latest_checkpoint(tmp_path, warn_damaged=False)
    assert state["step"] == 10 and torch.equal(state["nets"]["w"], torch.full((3,), 10.0))
    assert capsys.readouterr().err == "" and found[-1].exists()
    assert runs.latest_checkpoint(tmp_path)["step"] == 10
    err = capsys.readouterr().err
    assert "step-00000020.pt" in err and "corrupt" in err and err.strip().endswith("using step-00000010.pt instead")


def test_latest_checkpoint_sets_a_damaged_one_aside(tmp_path, capsys):
    found = _three(tmp_path)
    bad = b"\x00" * 64
    found[-1].write_bytes(bad)
    assert runs.latest_checkpoint(tmp_path, set_aside=True)["step"] == 10
    assert _names(tmp_path / runs.CHECKPOINTS) == ["step-00000000.pt", "step-00000010.pt", "step-00000020.pt.corrupt"]
    assert (tmp_path / runs.CHECKPOINTS / "step-00000020.pt.corrupt").read_bytes() == bad
    assert "kept as step-00000020.pt.corrupt" in capsys.readouterr().err


def test_latest_checkpoint_refuses_one_of_another_layout(tmp_path):
    _three(tmp_path)
    runs.save_checkpoint(tmp_path, 30, {**_state(30), "nets": [torch.zeros(3)]}, keep=10)  # nets not a dict
    save_checked(tmp_path / runs.CHECKPOINTS / "step-00000040.pt", {"step": 40})  # keys missing
    assert runs.latest_checkpoint(tmp_path, warn_damaged=False)["step"] == 20


def test_latest_checkpoint_with_none_or_none_good_is_one_error(tmp_path):
    with pytest.raises(InputError, match="has no checkpoint: it was stopped before step 0.*--resume"):
        runs.latest_checkpoint(tmp_path)
    for path in _three(tmp_path):
        path.write_bytes(b"")
    with pytest.raises(InputError, match=r"no checkpoint .* could be loaded \(step-00000020.pt, step-00000010.pt, "
                                         r"step-00000000.pt\); first problem: .*step-00000020.pt"):
        runs.latest_checkpoint(tmp_path)


def test_a_temporary_checkpoint_is_not_a_checkpoint(tmp_path):
    _three(tmp_path)

    def killed(fh):
        fh.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / runs.CHECKPOINTS / "step-00000030.pt", killed)
    assert runs.latest_checkpoint(tmp_path)["step"] == 20


# ----------------------------------------------------- networks, state ---
def test_load_networks_names_the_first_tensor_that_does_not_fit(tmp_path):
    nets = nn.ModuleDict({"generator": nn.Linear(2, 3)})
    other = nn.ModuleDict({"generator": nn.Linear(2, 4)})
    with pytest.raises(InputError, match=r"2 tensor\(s\) differ, first: generator.weight has shape \(4, 2\) in the "
                                         r"checkpoint but \(3, 2\) for config.json"):
        runs.load_networks(nets, {"nets": other.state_dict()}, tmp_path)
    with pytest.raises(InputError, match="first: it has no generator.bias"):
        runs.load_networks(nets, {"nets": {"generator.weight": torch.zeros(3, 2)}}, tmp_path)
    same = nn.ModuleDict({"generator": nn.Linear(2, 3)})
    runs.load_networks(nets, {"nets": same.state_dict()}, tmp_path)
    assert torch.equal(nets["generator"].weight, same["generator"].weight)


@dataclass
class _Spec:
    event_shape: tuple
    n_classes: int = 0

    @property
    def dim(self) -> int:
        return int(torch.tensor(self.event_shape).prod())


class _Stream:
    """The two random streams of a run (train's batch and noise streams), reduced to their states."""

    def __init__(self, seed: int):
        self.shared, self.local = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)

    def state(self):
        return self.shared.get_state()

    def set_state(self, state):
        self.shared.set_state(state)


def _training_state(seed: int):
    torch.manual_seed(seed)
    nets = nn.ModuleDict({"generator": nn.Linear(2, 2)})
    opts = {"generator": torch.optim.Adam(nets.parameters(), lr=0.1)}
    nets["generator"](torch.randn(4, 2)).sum().backward()
    opts["generator"].step()
    return nets, opts, _Stream(seed)


def test_checkpoint_state_restores_networks_optimizers_and_streams(tmp_path):
    nets, opts, stream = _training_state(0)
    runs.CheckpointState(nets, opts, stream, _Spec((2,)), parallel.World()).save(tmp_path, 7, keep=3)
    expected = (torch.rand(3, generator=stream.shared), torch.rand(3, generator=stream.local))  # the draws after step 7

    nets2, opts2, stream2 = _training_state(1)  # other weights, optimizer moments and streams
    assert runs.CheckpointState(nets2, opts2, stream2, _Spec((2,)), parallel.World()).restore(tmp_path) == 7
    for key, value in nets.state_dict().items():
        assert torch.equal(nets2.state_dict()[key], value), key
    assert torch.equal(opts2["generator"].state_dict()["state"][0]["exp_avg"], opts["generator"].state_dict()["state"][0]["exp_avg"])
    assert torch.equal(torch.rand(3, generator=stream2.shared), expected[0])
    assert torch.equal(torch.rand(3, generator=stream2.local), expected[1])


@pytest.mark.parametrize("spec, words", [(_Spec((3,)), "data has dimension 3 (shape (3,)) but the run was trained on "
                                                       "dimension 2"),
                                         (_Spec((2,), 4), "data has 4 classes but the run was trained on 0")])
def test_checkpoint_state_refuses_other_data(tmp_path, spec, words):
    nets, opts, stream = _training_state(0)
    runs.CheckpointState(nets, opts, stream, _Spec((2,)), parallel.World()).save(tmp_path, 7, keep=3)
    with pytest.raises(InputError, match=words.replace("(", r"\(").replace(")", r"\)")):
        runs.CheckpointState(nets, opts, stream, spec, parallel.World()).restore(tmp_path)


def test_a_conv_critic_checkpoint_from_before_operator_norms_still_loads(tmp_path):
    """Checkpoints written when conv critics used torch's spectral_norm hold `_u` and `_v` per conv layer where
    ConvOperatorNorm keeps `u`: they load (the vectors dropped, the weights kept); a checkpoint missing a tensor
    for any other reason is still refused."""
    from divgen import config, families, recipes
    from divgen import data as datasets
    from divgen.config import Config

    cfg = config.resolve(Config(data="digits", model="conv", divergence="wasserstein", lipschitz="sn", width=8))
    ds = datasets.load("digits", n=64)
    build = lambda seed: families.networks(cfg, ds.spec, ds.train, None, recipes.build(cfg, ds.train), seed=seed)  # noqa: E731
    trained, fresh = build(0), build(1)
    old = {}
    for key, value in trained.state_dict().items():
        if key.endswith(".parametrizations.weight.0.u"):
            old[key[:-1] + "_u"], old[key[:-1] + "_v"] = torch.ones(3), torch.ones(5)
        else:
            old[key] = value
    assert any(k.endswith("._u") for k in old)
    runs.load_networks(fresh, {"nets": old}, tmp_path)
    for key, value in trained.state_dict().items():
        if not key.endswith(".u"):
            assert torch.equal(fresh.state_dict()[key], value), key
    del old[next(k for k in old if k.endswith("original"))]
    with pytest.raises(InputError, match="does not fit its config.json"):
        runs.load_networks(build(2), {"nets": old}, tmp_path)
