"""tools/average_weights.py: snapshots averaged into a registered network's weights file."""
import sys

import pytest
import torch

from pose_core.models.io import save_torch_weights
from pose_core.registry import REPO_ROOT, get_spec

sys.path.insert(0, str(REPO_ROOT))
from tools.average_weights import main as average_main  # noqa: E402

MODEL = "person-detector"  # a small registered network


def snapshot(path, seed, extra=None):
    torch.manual_seed(seed)
    model = get_spec(MODEL).build()
    save_torch_weights(model, path)
    if extra:  # a tensor the registered network does not have, as a training file's unused stage
        state = torch.load(path, weights_only=True)
        torch.save({**state, **extra}, path)
    return torch.load(path, weights_only=True)


def test_average_is_the_mean_and_other_tensors_are_left_out(tmp_path, capsys):
    unused_stage = {"refinement_stages.0.w": torch.ones(3)}
    first = snapshot(tmp_path / "a.pt", 0, unused_stage)
    second = snapshot(tmp_path / "b.pt", 1, unused_stage)
    average_main(["--model", MODEL, "--out", str(tmp_path / "avg.pt"), str(tmp_path / "a.pt"), str(tmp_path / "b.pt")])
    averaged = torch.load(tmp_path / "avg.pt", weights_only=True)
    assert averaged.keys() == first.keys() - unused_stage.keys()
    name = next(k for k, v in first.items() if v.is_floating_point() and v.numel() > 100)
    assert not torch.equal(first[name], second[name])
    torch.testing.assert_close(averaged[name].float(), (first[name].float() + second[name].float()) / 2,
                               rtol=1e-3, atol=1e-3)
    assert "left out (not in person-detector): refinement_stages" in capsys.readouterr().out


def test_other_networks_and_damaged_files_are_one_line_errors(tmp_path):
    save_torch_weights(get_spec("centernet-person").build(), tmp_path / "other.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a state dict")
    for path, message in ((tmp_path / "other.pt", "person-detector"), (tmp_path / "bad.pt", "cannot read"),
                          (tmp_path / "missing.pt", "not found")):
        with pytest.raises(SystemExit, match=message):
            average_main(["--model", MODEL, "--out", str(tmp_path / "avg.pt"), str(path)])
    assert not (tmp_path / "avg.pt").exists()
