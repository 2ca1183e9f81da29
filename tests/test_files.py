"""files.py: atomic writes, strict JSON files, digest-checked tensor files.

Unit tests on small files; the end-to-end cases (a bit flipped in a real
checkpoint, a malicious checkpoint met by `divgen sample`) are in test_reliability.py.
"""

from __future__ import annotations

import json
import math
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from divgen import files
from divgen.errors import InputError

# A state of every kind a checkpoint holds: float and integer tensors, nested dicts, lists, tuples, plain values.
STATE = {"step": 7, "nets": {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.tensor([1, -2])},
         "rng": [3, (4.5, "x")], "data": {"event_shape": [2], "n_classes": 0}}
# files.digest(STATE), computed by the code that wrote every checkpoint so far (runs._digest of divgen 0.2.0):
# if it changes, no existing checkpoint loads any more.
STATE_DIGEST = "fc7a45082461aadad46350363ad8aef72809a08e85c1e7e9ad005caabb03ffa0"


def strict_loads(text: str):
    """json.loads that refuses NaN and Infinity, as strict parsers (JavaScript, jq, Go) do."""

    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], dict):
            assert_same_state(a[key], b[key])
        elif isinstance(a[key], torch.Tensor):
            assert a[key].dtype == b[key].dtype
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
        else:
            assert a[key] == b[key], key


# ------------------------------------------------------------ atomic_write ---
def test_a_failed_write_leaves_the_old_file_whole_and_no_temporary(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"old contents")

    def half_then_fail(fh):
        fh.write(b"new, but only half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        files.atomic_write(path, half_then_fail)
    assert path.read_bytes() == b"old contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_a_write_is_invisible_until_complete_and_its_temporary_matches_the_pattern(tmp_path):
    """While writing, the target is absent and the temporary file matches files.temporaries (what
    `--overwrite` removes after a kill); afterwards only the target is there."""
    path = tmp_path / "b.json"
    seen = {}

    def write(fh):
        fh.write(b"{}")
        seen["target exists"] = path.exists()
        seen["temporaries"] = list(tmp_path.glob(files.temporaries(path.name)))

    files.atomic_write(path, write)
    assert seen["target exists"] is False and len(seen["temporaries"]) == 1
    assert path.read_bytes() == b"{}"
    assert [p.name for p in tmp_path.iterdir()] == ["b.json"]


def test_write_json_is_strict(tmp_path):
    obj = {"nan": math.nan, "inf": [math.inf, -math.inf, 1.5], "np": np.float32(2.5), "t": torch.tensor(3.0), "tuple": (1, 2)}
    files.write_json(tmp_path / "x.json", obj)
    text = (tmp_path / "x.json").read_text()
    assert "NaN" not in text and "Infinity" not in text and text.endswith("}\n")
    assert strict_loads(text) == {"nan": None, "inf": [None, None, 1.5], "np": 2.5, "t": 3.0, "tuple": [1, 2]}


# ---------------------------------------------------------- checked files ---
def test_a_checked_file_loads_back_equal_without_its_digest(tmp_path):
    path = files.save_checked(tmp_path / "s.pt", STATE)
    loaded = files.load_checked(path, ("step", "nets"))
    assert files.DIGEST not in loaded
    assert_same_state(loaded, STATE)


def test_the_digest_and_the_file_format_are_those_of_existing_checkpoints(tmp_path):
    assert files.digest(STATE) == STATE_DIGEST
    # a file written by an earlier divgen: torch.save of the state plus its digest
    torch.save({**STATE, "sha256": STATE_DIGEST}, tmp_path / "old.pt")
    assert_same_state(files.load_checked(tmp_path / "old.pt"), STATE)
    raw = torch.load(files.save_checked(tmp_path / "new.pt", STATE), weights_only=True)
    assert raw["sha256"] == STATE_DIGEST and raw.keys() == {*STATE, "sha256"}


def test_the_digest_sees_dtype_shape_and_values_but_not_key_order():
    t = torch.zeros(2, 3)
    base = files.digest({"a": t, "b": 1})
    assert files.digest({"b": 1, "a": t}) == base
    for other in ({"a": torch.zeros(3, 2), "b": 1}, {"a": torch.zeros(2, 3, dtype=torch.float64), "b": 1},
                  {"a": torch.zeros(2, 3).index_fill(1, torch.tensor([2]), 1e-30), "b": 1}, {"a": t, "b": 2}):
        assert files.digest(other) != base


def _flip_a_byte_inside_a_tensor(path: Path) -> None:
    """Flip one byte in the middle of the largest tensor's bytes (a zip member .../data/N): damage
    that torch.load itself does not notice."""
    with zipfile.ZipFile(path) as archive:
        member = max((m for m in archive.infolist() if "/data/" in m.filename), key=lambda m: m.file_size)
    raw = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", raw[member.header_offset + 26: member.header_offset + 30])
    raw[member.header_offset + 30 + name_len + extra_len + member.file_size // 2] ^= 0x01
    path.write_bytes(bytes(raw))


def test_one_flipped_byte_in_a_tensor_is_refused(tmp_path):
    path = files.save_checked(tmp_path / "s.pt", {"w": torch.linspace(0, 1, 1000)})
    _flip_a_byte_inside_a_tensor(path)
    flipped = torch.load(path, weights_only=True)  # the premise: torch loads it, with another tensor
    assert not torch.equal(flipped["w"], torch.linspace(0, 1, 1000))
    with pytest.raises(InputError, match=r"s\.pt.* is corrupt: its contents do not match their SHA-256 digest"):
        files.load_checked(path)


@pytest.mark.parametrize("damage", ["truncated", "empty", "not a zip"])
def test_a_damaged_file_is_refused_naming_it(tmp_path, damage):
    path = files.save_checked(tmp_path / "s.pt", STATE)
    raw = path.read_bytes()
    path.write_bytes({"truncated": raw[: len(raw) // 2], "empty": b"", "not a zip": b"hello" * 20}[damage])
    with pytest.raises(InputError, match=r"^checkpoint '.*s\.pt' is corrupt or unsafe: "):
        files.load_checked(path, what="checkpoint")


@pytest.mark.parametrize("content", [[1, 2, 3], torch.zeros(3), {"w": torch.zeros(3)}], ids=["list", "tensor", "no digest"])
def test_anything_but_a_dict_with_its_digest_is_refused(tmp_path, content):
    torch.save(content, tmp_path / "x.pt")
    with pytest.raises(InputError, match=r"x\.pt' is not a divgen file"):
        files.load_checked(tmp_path / "x.pt")


def test_a_missing_required_key_is_refused(tmp_path):
    path = files.save_checked(tmp_path / "s.pt", {"model": torch.zeros(1)})
    assert files.load_checked(path, ("model",))["model"].shape == (1,)
    with pytest.raises(InputError, match="is not a divgen classifier"):
        files.load_checked(path, ("model", "test_accuracy"), what="classifier")


def test_a_state_cannot_hold_the_digest_key(tmp_path):
    with pytest.raises(ValueError, match="sha256"):
        files.save_checked(tmp_path / "s.pt", {"sha256": "forged"})
    assert not (tmp_path / "s.pt").exists()


class Payload:
    """Unpickling this creates a file: what a malicious file would do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_a_pickle_with_a_forbidden_global_is_refused_unexecuted(tmp_path, how):
    marker, path = tmp_path / "pwned", tmp_path / "evil.pt"
    payload = {"w": torch.zeros(2), "x": Payload(marker)}
    if how == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    with pytest.raises(InputError, match=r"evil\.pt' is corrupt or unsafe: .*weights-only load refuses"):
        files.load_checked(path)
    assert not marker.exists()
