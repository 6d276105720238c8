"""Static int8 quantisation of a registered network's ONNX file (ONNX Runtime, QDQ format).

The registered file stores fp16 weights computed in fp32 (export_onnx); `prepare_fp32`
turns it into a plain fp32 graph of the same function, arranged for int8: the Casts folded,
BatchNorm fused, CondConv's run-time kernels equalised and split. `quantize` writes the QDQ
model, its activation ranges calibrated on `calibration_batches`: training images put
through the model's own pipeline preprocessing, one network call each, at the sizes the
pipeline gives (a bottom-up or detector input's width follows the image's aspect ratio).
"""
import re
from pathlib import Path

import cv2
import numpy as np

from .errors import InputError, PoseError
from .eval import DEFAULT_DATA_ROOT
from .export_onnx import store_weights_fp16

DEFAULT_CALIBRATION_ANN = DEFAULT_DATA_ROOT / "coco_person_train" / "person_keypoints.json"
# The operators to quantise: the convolutions and what lies between them. MatMul (CondConv
# routing x experts, ~1% of the time) stays float: its output is a convolution kernel, which
# the convolution's own input quantisation covers.
OP_TYPES = ("Conv", "ConvTranspose", "Add", "Mul", "Concat", "Pad", "Resize", "Clip", "Relu")
# Nodes (regular expressions on their names) kept in float32 by default, chosen by measuring
# AP on coco_val_dev (tools/quantize_onnx.py): block 0's depthwise kernels are derivative
# filters (taps of +-4 next to taps of 0.03) that int8 rounds badly, and the stem stays float
# with it (float_convs_between_qdq); the bottom-up output heads are the most sensitive layers.
# A model not listed is quantised whole (person-detector: box AP 0.124 -> 0.123).
BOTTOM_UP_KEEP_FLOAT = (r"^/backbone/stem/", r"^/backbone/(blocks/)?blocks\.0/", r"^/initial_stage/(heatmaps|pafs)/")
KEEP_FLOAT = {
    "ldlc-openpose-t6-fast": BOTTOM_UP_KEEP_FLOAT,
    "ldlc-openpose-t6w15": BOTTOM_UP_KEEP_FLOAT,
    # Its blocks run one by one ("/backbone/blocks.0/"). MultiPose's pyramid merges and heatmap
    # head also stay float: int8 AP 0.271 -> 0.275 (fp32 0.280) for 0.2-0.3 ms (stop 21, README).
    # Of the output heads only the last convs stay float, and so do the CPM's first conv's three
    # pieces (LDLCOpenPoseFPN.forward's top-level convs): on 300 coco_person_train images 0.298
    # AP against 0.297 with the heads' 512-wide convs float too, which cost 0.5 ms (stop 22).
    "ldlc-openpose-fpn": (r"^/backbone/stem/", r"^/backbone/(blocks/)?blocks\.0/",
                          r"^/initial_stage/(heatmaps|pafs)/(heatmaps|pafs)\.1/",
                          r"^/backbone/(heatmap_head|separable_conv2d)", r"^/Conv(_[12])?$"),
    "mnv2-hwloss": (r"^/backbone/stem/", r"^/backbone/blocks/blocks\.0/"),
}
# (calibration images, range method) of tools/quantize_onnx.py. ldlc-openpose-fpn: on 300
# coco_person_train images 0.301 AP with 400 images and entropy ranges, 0.296 with 400 and
# minmax, 0.298 with 150 and minmax (fp32 0.315) (stop 22, with keypoint snapping alone). With
# stop 23's decoding (heat-weighted scores): entropy ranges from 250 / 400 / 600 / 800 images
# 0.316 / 0.315 / 0.316 / 0.313, percentile (400) 0.312 (fp32 0.322); coco_val_dev 0.308 with
# 250 against 0.307 with 400 (fp32 0.317).
DEFAULT_CALIBRATION = (150, "minmax")
CALIBRATION = {"ldlc-openpose-fpn": (250, "entropy")}


def prepare_fp32(src, dst):
    """Write `src` as a float32 graph of the same function: fp16 initializers + Cast folded
    into float32 ones and BatchNorm fused into the preceding convolution (ONNX Runtime's
    basic optimisation), then equalize_dynamic_kernels and split_dynamic_depthwise."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # Symbolic shape inference gives up on the exported TF-SAME padding arithmetic; ONNX's
    # own shape inference is enough for the quantiser.
    quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
    model = onnx.load(str(dst))
    equalize_dynamic_kernels(model)
    split_dynamic_depthwise(model)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return Path(dst)


def _dynamic_kernel_convs(graph):
    """(conv, matmul, reshape) for each Conv whose kernel is mixed at run time from constant
    experts, Conv(x, Reshape(MatMul(routing, experts))), the experts used by that MatMul only."""
    initializers = {i.name for i in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    uses = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    found = []
    for conv in graph.node:
        reshape = producer.get(conv.input[1]) if conv.op_type == "Conv" else None
        matmul = producer.get(reshape.input[0]) if reshape is not None and reshape.op_type == "Reshape" else None
        if matmul is not None and matmul.op_type == "MatMul" and matmul.input[1] in initializers \
                and uses[matmul.input[1]] == 1 and reshape.input[1] in initializers:
            found.append((conv, matmul, reshape))
    return found


def _initializer(graph, name):
    from onnx import numpy_helper

    return numpy_helper.to_array(next(i for i in graph.initializer if i.name == name))


def _set_initializer(graph, name, array):
    from onnx import numpy_helper

    for init in graph.initializer:
        if init.name == name:
            init.CopyFrom(numpy_helper.from_array(array, name))
            return
    graph.initializer.append(numpy_helper.from_array(array, name))


def equalize_dynamic_kernels(model):
    """Rewrite an onnx.ModelProto in place, same function: each run-time kernel
    (_dynamic_kernel_convs) followed (through Reshapes) by a BatchNormalization gets each
    output channel of its experts divided by that channel's largest magnitude, and the
    BatchNormalization multiplies it back (scale x s, mean / s).

    The quantiser gives a run-time kernel one scale (per-channel scales need constant
    weights), and in ldlc-openpose-t6's blocks 11-12 a few depthwise channels are 30-70x
    larger than the median. Returns the number of convolutions equalised."""
    graph = model.graph
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    count = 0
    for conv, matmul, _ in _dynamic_kernel_convs(graph):
        batch_norm = _following_batch_norm(conv, consumers)
        if batch_norm is None:
            continue
        experts = _initializer(graph, matmul.input[1])
        bn_scale, bn_mean = _initializer(graph, batch_norm.input[1]), _initializer(graph, batch_norm.input[3])
        per_channel = experts.reshape(len(experts), len(bn_scale), -1)
        channel_max = np.abs(per_channel).max(axis=(0, 2))
        channel_max = np.where(channel_max > 0, channel_max, 1).astype(np.float32)
        _set_initializer(graph, matmul.input[1], (per_channel / channel_max[:, None]).reshape(experts.shape))
        for index, value in ((1, bn_scale * channel_max), (3, bn_mean / channel_max)):
            name = f"{batch_norm.name}_equalized_{index}"  # BatchNorm statistics may be shared
            _set_initializer(graph, name, value.astype(np.float32))
            batch_norm.input[index] = name
        count += 1
    used = {name for node in graph.node for name in node.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    return count


def _following_batch_norm(node, consumers):
    """The BatchNormalization that `node` alone feeds, through Reshapes only; else None."""
    while True:
        following = consumers.get(node.output[0], [])
        if len(following) != 1 or following[0].op_type not in ("Reshape", "BatchNormalization"):
            return None
        node = following[0]
        if node.op_type == "BatchNormalization":
            return node


def split_dynamic_depthwise(model, centre=3):
    """Rewrite an onnx.ModelProto in place, same function: each depthwise run-time kernel
    (_dynamic_kernel_convs, one input channel per group) larger than `centre` x `centre`
    becomes two convolutions, summed: its centre taps, and the whole kernel with the centre
    zeroed (the ring).

    ldlc-openpose-t6's 7x7 kernels grew from zero-padded 3x3 ones: the ring's taps are ~200x
    smaller than the centre's, and one int8 scale for the whole kernel rounds them to zero,
    which alone drops the PAFs to 15 dB SQNR; each part now gets its own scale. Costs one
    centre-sized convolution and an Add. Returns the number of convolutions split."""
    from onnx import helper

    graph = model.graph
    count = 0
    for conv, matmul, reshape in _dynamic_kernel_convs(graph):
        kernel_shape = _initializer(graph, reshape.input[1])
        size = int(kernel_shape[-1])
        if kernel_shape[1] != 1 or size <= centre or kernel_shape[-2] != size:
            continue
        attributes = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
        dilation = attributes.get("dilations", [1, 1])
        margin = (size - centre) // 2
        experts = _initializer(graph, matmul.input[1])
        kernels = experts.reshape(len(experts), -1, size, size)
        centre_part = np.ascontiguousarray(kernels[:, :, margin:margin + centre, margin:margin + centre])
        ring_part = kernels.copy()
        ring_part[:, :, margin:margin + centre, margin:margin + centre] = 0
        _set_initializer(graph, matmul.input[1], ring_part.reshape(experts.shape))

        prefix = conv.name + "_centre"
        _set_initializer(graph, prefix + "_experts", centre_part.reshape(len(experts), -1))
        _set_initializer(graph, prefix + "_shape", np.array([-1, 1, centre, centre], np.int64))
        pads = [p - d * margin for p, d in zip(attributes.get("pads", [0] * 4), dilation * 2)]
        centre_attributes = {**attributes, "pads": pads, "kernel_shape": [centre, centre]}
        total, ring_out, centre_out = conv.output[0], conv.output[0] + "_ring", conv.output[0] + "_centre"
        conv.output[0] = ring_out
        new_nodes = [
            helper.make_node("MatMul", [matmul.input[0], prefix + "_experts"], [prefix + "_mixed"],
                             name=prefix + "/MatMul"),
            helper.make_node("Reshape", [prefix + "_mixed", prefix + "_shape"], [prefix + "_kernel"],
                             name=prefix + "/Reshape"),
            helper.make_node("Conv", [conv.input[0], prefix + "_kernel"], [centre_out], name=prefix + "/Conv",
                             **centre_attributes),
            helper.make_node("Add", [centre_out, ring_out], [total], name=conv.name + "_sum"),
        ]
        position = list(graph.node).index(conv) + 1
        for offset, node in enumerate(new_nodes):
            graph.node.insert(position + offset, node)
        count += 1
    return count


def calibration_batches(spec, ann_file=DEFAULT_CALIBRATION_ANN, count=150, height=None):
    """The network inputs of `count` images of a COCO person-keypoint file (images spread
    evenly over its sorted ids), preprocessed by the pipeline of `spec`'s kind: a bottom-up
    frame resized to `height` (default the model's) and padded, a detector's letterbox, or
    a top-down model's batch of crops around the annotated people."""
    from .eval import GroundTruthBoxes, load_ground_truth

    coco = load_ground_truth(ann_file)
    people = GroundTruthBoxes(coco).boxes
    ids = sorted(people)
    if not ids:
        raise InputError(f"no annotated people in {ann_file}")
    chosen = [ids[i] for i in np.linspace(0, len(ids) - 1, min(count, len(ids))).round().astype(int)]
    preprocess = pipeline_preprocess(spec, height)
    batches = []
    for image_id in chosen:
        path = Path(ann_file).parent / "images" / coco.imgs[image_id]["file_name"]
        frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if frame is None:
            raise InputError(f"cannot read image {path}")
        batches.append(preprocess(frame, np.asarray(people[image_id], np.float32)))
    return batches


def pipeline_preprocess(spec, height):
    """(BGR frame, annotated boxes x1y1x2y2) -> the network input the model's pipeline makes."""
    if spec.kind == "bottom-up":
        from .bottomup import BottomUpPipeline
        pipeline = BottomUpPipeline(runner=None, height=height or spec.input_height)
        return lambda frame, boxes: pipeline.preprocess(frame)[0]
    if spec.kind == "detector":
        from .person_detector import letterbox
        return lambda frame, boxes: letterbox(frame, height or spec.input_height)[0]
    if spec.kind == "top-down":
        from .topdown import TopDownPipeline, box_to_center_size
        crop_height = height or spec.input_height
        pipeline = TopDownPipeline(detector=None, runner=None, input_size=(crop_height, crop_height * 3 // 4))
        aspect = pipeline.input_size[1] / pipeline.input_size[0]
        return lambda frame, boxes: pipeline.crop_batch(frame, *box_to_center_size(boxes, aspect))
    raise PoseError(f"model '{spec.name}' of kind {spec.kind} has no pipeline to calibrate with")


class _CalibrationReader:
    """onnxruntime CalibrationDataReader over a list of batches. quantize_static reads it one
    batch at a time (CalibStridedMinMax 1): the calibrator then holds one batch's intermediate
    tensors, and its histograms never stack tensors of different widths."""

    def __init__(self, batches, input_name="image"):
        self.batches, self.input_name = batches, input_name
        self.set_range(0, len(batches))

    def __len__(self):
        return len(self.batches)

    def set_range(self, start_index, end_index):
        self.pending = iter(self.batches[start_index:end_index])

    def get_next(self):
        batch = next(self.pending, None)
        return None if batch is None else {self.input_name: batch}


def quantize(fp32_path, int8_path, batches, keep_float=(), method="minmax"):
    """Write the QDQ int8 model of `fp32_path` (a prepare_fp32 file) to `int8_path`:
    per-channel int8 weights, per-tensor uint8 activations with ranges from `batches` by
    `method` ("minmax", "entropy" or "percentile", the 99.999th), the nodes whose names
    match a `keep_float` regular expression left in float32. uint8 activations: int8 ones
    gave the same accuracy at 2.3x the network time here (ONNX Runtime 1.32, AVX512-VNNI)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    names = [node.name for node in onnx.load(str(fp32_path)).graph.node]
    excluded = [name for name in names if any(re.search(pattern, name) for pattern in keep_float)]
    Path(int8_path).parent.mkdir(parents=True, exist_ok=True)
    quantize_static(
        str(fp32_path), str(int8_path), _CalibrationReader(batches), quant_format=QuantFormat.QDQ,
        op_types_to_quantize=list(OP_TYPES), per_channel=True, weight_type=QuantType.QInt8,
        activation_type=QuantType.QUInt8, calibrate_method=methods[method], nodes_to_exclude=excluded,
        extra_options={"CalibStridedMinMax": 1, "CalibPercentile": 99.999})
    model = onnx.load(str(int8_path))
    sandwiched = float_convs_between_qdq(model)
    if sandwiched:
        Path(int8_path).unlink()
        raise PoseError(f"float convolutions between quantised neighbours: {', '.join(sandwiched)}; ONNX Runtime "
                         f"would quantise their weights per tensor at load (WeightBiasQuantization): keep their "
                         f"input's or output's neighbour in float32 too")
    # What stays float (the CondConv expert banks, layers kept float) is stored fp16 + Cast, as
    # in the fp32 files: ldlc-openpose-t6-fast's int8 file 11.1 -> 6.1 MB, the same speed (ONNX
    # Runtime folds the Casts when it loads the file; measured 27.1 and 26.8 ms a frame against
    # 30.6 and 27.3 for float32 storage, alternating runs).
    store_weights_fp16(model)
    onnx.save(model, str(int8_path))
    return Path(int8_path)


def float_convs_between_qdq(model):
    """Names of the float-weight Conv nodes that read a DequantizeLinear and feed a
    QuantizeLinear (directly or through a Relu or Clip): ONNX Runtime's WeightBiasQuantization
    optimiser quantises their weights per tensor when it loads the model (measured:
    mnv2-hwloss's heatmaps 17 -> 2.5 dB SQNR when block 0's depthwise convolution alone was
    kept float), so keeping such a node float is no choice."""
    producer = {out: node for node in model.graph.node for out in node.output}
    readers = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)

    def feeds_quantize(tensor):
        return any(reader.op_type == "QuantizeLinear"
                   or reader.op_type in ("Relu", "Clip") and feeds_quantize(reader.output[0])
                   for reader in readers.get(tensor, []))

    float_weights = {init.name for init in model.graph.initializer}
    return [node.name for node in model.graph.node
            if node.op_type == "Conv" and node.input[1] in float_weights and node.input[0] in producer
            and producer[node.input[0]].op_type == "DequantizeLinear" and feeds_quantize(node.output[0])]
