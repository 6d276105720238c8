"""Average a run's weight snapshots (SWA-style) into one weights file of a registered network.

    python tools/average_weights.py --model ldlc-openpose-t6w15 --out weights/ldlc-openpose-t6w15.pt \
        cache/train/ldlc-openpose-t6w15.124672.pt cache/train/ldlc-openpose-t6w15.128688.pt ...

Floating tensors are averaged in float32 (BN statistics included), integer ones (BN batch
counts) taken from the last file; the result is saved as fp16 like every committed .pt.
Tensors the network does not have (a training file's refinement stage, for a registered
network built without it) are left out and listed; a tensor the network has but the files
lack, or hold in another shape, is an error. With one file, this converts it to the registered
network.
"""
import argparse
import sys
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from pose_core.errors import PoseError, WeightsError  # noqa: E402
from pose_core.models.io import load_fitting_state, read_state_dict, save_torch_weights  # noqa: E402
from pose_core.registry import MODELS, get_spec  # noqa: E402


def average_states(states):
    """{name: tensor}: the float32 mean of each floating tensor, the last file's other tensors."""
    names = states[-1].keys()
    for state in states:
        if state.keys() != names:
            raise WeightsError("the snapshots do not hold the same tensors")
    return {name: (torch.stack([s[name].float() for s in states]).mean(0) if states[-1][name].is_floating_point()
                   else states[-1][name]) for name in names}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, choices=sorted(MODELS))
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("snapshots", nargs="+", type=Path)
    args = parser.parse_args(argv)
    try:
        states = [read_state_dict(path) for path in args.snapshots]
        model = get_spec(args.model).build()
        own = model.state_dict().keys()
        averaged = average_states(states)
        dropped = sorted({name.split(".")[0] for name in averaged if name not in own})
        load_fitting_state(model, {name: t for name, t in averaged.items() if name in own}, "the snapshots",
                           args.model)
        save_torch_weights(model, args.out)
    except PoseError as exc:
        raise SystemExit(f"error: {exc}")
    print(f"wrote {args.out}: the mean of {len(states)} files"
          + (f"; left out (not in {args.model}): {', '.join(dropped)}" if dropped else ""))


if __name__ == "__main__":
    main()
