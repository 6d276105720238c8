"""Read the weights of a TensorFlow.js graph model (model.json + .bin shards).

Used by the MoveNet and CenterNet converters (backbone initialisation and teacher). Weights are
stored in the shards back to back, in `weightsManifest` order; float16-quantised
float32 tensors are widened back to float32.
"""
import argparse
import json
import os
from pathlib import Path

import numpy as np

_DTYPES = {"float32": np.float32, "float16": np.float16, "int32": np.int32, "uint8": np.uint8,
           "int8": np.int8, "uint16": np.uint16, "int16": np.int16, "bool": np.bool_}


def load_tfjs_model(model_json):
    """-> (graph dict from model.json, {tensor name: numpy array})."""
    model_json = Path(model_json)
    spec = json.loads(model_json.read_text())
    weights = {}
    for group in spec["weightsManifest"]:
        blob = b"".join((model_json.parent / p).read_bytes() for p in group["paths"])
        offset = 0
        for w in group["weights"]:
            quant = w.get("quantization")
            stored = _DTYPES[quant["dtype"] if quant else w["dtype"]]
            count = int(np.prod(w["shape"], dtype=np.int64))
            nbytes = count * np.dtype(stored).itemsize
            arr = np.frombuffer(blob, dtype=stored, count=count, offset=offset).reshape(w["shape"])
            offset += nbytes
            if quant and "scale" in quant:  # affine uint8/uint16 quantisation
                arr = arr.astype(np.float32) * quant["scale"] + quant["min"]
            weights[w["name"]] = arr.astype(_DTYPES[w["dtype"]])
        if offset != len(blob):
            raise ValueError(f"{model_json}: manifest covers {offset} bytes of {len(blob)}")
    return spec, weights


def torch_kernel(kernel, depthwise=False):
    """A tfjs convolution kernel, HWIO (or HWC1 when `depthwise`), as a float32 torch tensor
    laid out OIHW (C1HW)."""
    import torch

    axes = (2, 3, 0, 1) if depthwise else (3, 2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(np.asarray(kernel, np.float32).transpose(axes)))


def backbone_converter_main(description, default_json, default_out, convert_backbone, argv=None):
    """The command line of a backbone converter: --model-json (tfjs) -> --out (.pt state dict
    from `convert_backbone(tfjs weights)`), written atomically."""
    import torch

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model-json", type=Path, default=default_json)
    parser.add_argument("--out", type=Path, default=default_out)
    args = parser.parse_args(argv)
    _, weights = load_tfjs_model(args.model_json)
    state = convert_backbone(weights)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, args.out)
    print(f"wrote {args.out}: {len(state)} tensors, {sum(t.numel() for t in state.values()) / 1e6:.3f}M values")
