"""Small real ONNX models for the reference-recorder and compare tests, built with onnx.helper."""

from __future__ import annotations

from pathlib import Path

import numpy as np

IR_VERSION = 8  # readable by every ONNX Runtime the project supports


def _save(graph, path: str | Path, opset: int = 17) -> Path:
    import onnx
    from onnx import helper

    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=IR_VERSION
    )
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return Path(path)


def tiny_classifier(
    path: str | Path, size: int = 32, classes: int = 4, batch: int | str = "N", seed: int = 0
) -> Path:
    """``input`` (batch, 3, size, size) -> mean colour -> linear -> softmax ``probs`` (batch, classes):
    a classifier whose output depends on the crop it is given."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(0, 4, (3, classes)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.normal(0, 1, (classes,)).astype(np.float32), "B")
    nodes = [
        helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "W", "B"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    g = helper.make_graph(
        nodes,
        "tiny_classifier",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [batch, classes])],
        [w, b],
    )
    return _save(g, path)


def tiny_conv(
    path: str | Path,
    width: int,
    height: int,
    channels: int = 3,
    nhwc: bool = False,
    batch: int | str = 1,
    seed: int = 0,
) -> Path:
    """``images`` (NCHW or NHWC) -> 1x1 conv to 2 channels -> ``feat`` (batch, 2, H, W) and the mean
    ``pooled`` (batch, 2): outputs that show every input pixel."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(0, 1, (2, channels, 1, 1)).astype(np.float32), "W")
    shape = [batch, height, width, channels] if nhwc else [batch, channels, height, width]
    nodes = []
    x = "images"
    if nhwc:
        nodes.append(helper.make_node("Transpose", ["images"], ["nchw"], perm=[0, 3, 1, 2]))
        x = "nchw"
    nodes += [
        helper.make_node("Conv", [x, "W"], ["feat"]),
        helper.make_node("GlobalAveragePool", ["feat"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["pooled"]),
    ]
    g = helper.make_graph(
        nodes,
        "tiny_conv",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, shape)],
        [
            helper.make_tensor_value_info("feat", TensorProto.FLOAT, [batch, 2, height, width]),
            helper.make_tensor_value_info("pooled", TensorProto.FLOAT, [batch, 2]),
        ],
        [w],
    )
    return _save(g, path)


def float16_model(src: str | Path, dst: str | Path) -> Path:
    """A true FP16 copy of a float32 model: weights, constants, input and outputs in float16 (what an
    FP16 engine computes in), except Resize's roi/scales, which ONNX requires in float32."""
    import onnx
    from onnx import TensorProto, numpy_helper

    m = onnx.load(str(src))
    g = m.graph
    keep = {
        n.input[i]
        for n in g.node
        if n.op_type == "Resize"
        for i in (1, 2)
        if len(n.input) > i and n.input[i]
    }

    def half(t) -> None:
        if t.data_type == TensorProto.FLOAT and t.name not in keep:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name))

    for t in g.initializer:
        half(t)
    for n in g.node:
        for a in n.attribute:
            if n.op_type == "Constant" and a.name == "value" and n.output[0] not in keep:
                half(a.t)
            if n.op_type == "Cast" and a.name == "to" and a.i == TensorProto.FLOAT:
                a.i = TensorProto.FLOAT16
    for v in list(g.input) + list(g.output):
        if v.type.tensor_type.elem_type == TensorProto.FLOAT:
            v.type.tensor_type.elem_type = TensorProto.FLOAT16
    del g.value_info[:]
    onnx.save(m, str(dst))
    return Path(dst)
