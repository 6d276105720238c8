"""PyTorch weight files: fp16 state dicts on disk, float32 eval-mode modules in memory."""
import os
from pathlib import Path

import torch

from ..errors import WeightsError

FP16_MAX = torch.finfo(torch.float16).max


def save_torch_weights(model, path):
    """Save the state dict in fp16 (fp32 for a tensor fp16 cannot hold), atomically."""
    path = Path(path)
    state = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu()
        if tensor.is_floating_point() and not (tensor.abs() > FP16_MAX).any():
            tensor = tensor.half()
        state[name] = tensor
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def read_state_dict(path) -> dict:
    """The {name: tensor} saved at `path`, or a WeightsError that says what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch raises several unrelated types for damaged files
        raise WeightsError(f"cannot read weights {path}: truncated or not a PyTorch state dict") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"weights {path} are not a PyTorch state dict")
    return state


def load_fitting_state(model, state, source, model_name):
    """Load `state` into `model` (floating tensors as float32), or a WeightsError naming `source`
    when its tensors' names or shapes are not the model's."""
    expected = model.state_dict()
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    mismatched = sorted(k for k in expected.keys() & state.keys() if expected[k].shape != state[k].shape)
    if missing or unexpected or mismatched:
        first = (missing or unexpected or mismatched)[0]
        raise WeightsError(f"{source} do not fit model {model_name}: {len(missing)} missing, "
                           f"{len(unexpected)} unexpected, {len(mismatched)} mis-shaped (e.g. {first})")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})


def load_torch_weights(spec, path) -> torch.nn.Module:
    """spec.build() with the weights at `path`, as a float32 module in eval mode."""
    model = spec.build()
    load_fitting_state(model, read_state_dict(path), f"weights {path}", spec.name)
    return model.float().eval()
