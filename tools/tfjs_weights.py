"""Read the weights of a TensorFlow.js graph model (model.json + .bin shards).

Used by the MoveNet converters (backbone initialisation and teacher). Weights are
stored in the shards back to back, in `weightsManifest` order; float16-quantised
float32 tensors are widened back to float32.
"""
import json
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
