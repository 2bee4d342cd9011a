#!/usr/bin/env python3
"""Re-export the fixture NanoDet detector in the output formats of other detector families.

Used by the integration tests to check that a detector Strix has no zoo entry for works from a
spec TOML alone. Each file is NanoDet's graph with decoding ops appended in ONNX, so it is the
same real detector, answering in another family's format:

  yolo_rows.onnx     [1, 3549, 85]  cx, cy, w, h (416-input pixels), objectness, 80 class
                                    probabilities (objectness x class = NanoDet's score)
  yolo_columns.onnx  [1, 84, 3549]  cx, cy, w, h, 80 scores (Ultralytics v8 layout)
  ssd.onnx           boxes [1, 3549, 4] x1, y1, x2, y2 as fractions of the input;
                     scores [1, 3549, 81] with a background column first
  centernet_s8.onnx  heatmap [1, 80, 52, 52], size [1, 2, 52, 52] (cells),
                     offset [1, 2, 52, 52] (the stride-8 head only)

usage: make_exports.py NANODET.onnx OUT_DIR
"""
import sys

import numpy as np
import onnx
from onnx import helper, numpy_helper

INPUT = 416
HEADS = [(8, "Identity:0", "Identity_3:0"), (16, "Identity_1:0", "Identity_4:0"), (32, "Identity_2:0", "Identity_5:0")]


class Graph:
    def __init__(self, model):
        self.model = model
        self.nodes = []
        self.inits = []
        self.count = 0

    def const(self, array):
        self.count += 1
        name = f"export_c{self.count}"
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def op(self, op_type, inputs, **attrs):
        self.count += 1
        out = f"export_t{self.count}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def slice(self, x, start, end, axis):
        return self.op("Slice", [x, self.const(np.array([start], np.int64)), self.const(np.array([end], np.int64)),
                                 self.const(np.array([axis], np.int64))])

    def save(self, outputs, path):
        """Write the graph with `outputs` = [(tensor, output name, shape)]."""
        m = onnx.ModelProto()
        m.CopyFrom(self.model)
        g = m.graph
        g.node.extend(self.nodes)
        g.node.extend(helper.make_node("Identity", [t], [name]) for t, name, _ in outputs)
        g.initializer.extend(self.inits)
        del g.output[:]
        for _, name, shape in outputs:
            g.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, shape))
        onnx.checker.check_model(m)
        onnx.save(m, path)


def head(g, stride, dist_name):
    """Corners (x1y1, x2y2 as [1, cells, 2] each) and side distances [1, cells, 4] of one head."""
    n = INPUT // stride
    cells = n * n
    d = g.op("Reshape", [dist_name, g.const(np.array([1, cells, 4, 11], np.int64))])
    d = g.op("Softmax", [d], axis=3)
    d = g.op("MatMul", [d, g.const(np.arange(11, dtype=np.float32).reshape(11, 1))])
    d = g.op("Reshape", [d, g.const(np.array([1, cells, 4], np.int64))])
    ltrb = g.op("Mul", [d, g.const(np.array(stride, np.float32))])
    idx = np.arange(cells)
    centres = np.stack([(idx % n + 0.5) * stride, (idx // n + 0.5) * stride], 1).astype(np.float32)[None]
    c = g.const(centres)
    x1y1 = g.op("Sub", [c, g.slice(ltrb, 0, 2, 2)])
    x2y2 = g.op("Add", [c, g.slice(ltrb, 2, 4, 2)])
    return x1y1, x2y2, ltrb


def cxcywh(g, x1y1, x2y2):
    centre = g.op("Div", [g.op("Add", [x1y1, x2y2]), g.const(np.array(2.0, np.float32))])
    size = g.op("Sub", [x2y2, x1y1])
    return g.op("Concat", [centre, size], axis=2)


def yolo(model, out, columns):
    g = Graph(model)
    rows = []
    for stride, scores, dist in HEADS:
        x1y1, x2y2, _ = head(g, stride, dist)
        box = cxcywh(g, x1y1, x2y2)
        if columns:
            rows.append(g.op("Concat", [box, scores], axis=2))
        else:
            # objectness = best class score; classes divided by it, so their product is the score.
            obj = g.op("ReduceMax", [scores], axes=[2], keepdims=1)
            safe = g.op("Max", [obj, g.const(np.array(1e-6, np.float32))])
            probs = g.op("Div", [scores, safe])
            rows.append(g.op("Concat", [box, obj, probs], axis=2))
    y = g.op("Concat", rows, axis=1)
    if columns:
        y = g.op("Transpose", [y], perm=[0, 2, 1])
        g.save([(y, "output0", [1, 84, 3549])], out)
    else:
        g.save([(y, "output", [1, 3549, 85])], out)


def ssd(model, out):
    g = Graph(model)
    boxes, scores = [], []
    for stride, s, dist in HEADS:
        x1y1, x2y2, _ = head(g, stride, dist)
        b = g.op("Concat", [x1y1, x2y2], axis=2)
        boxes.append(g.op("Div", [b, g.const(np.array(INPUT, np.float32))]))
        background = g.op("Sub", [g.const(np.array(1.0, np.float32)), g.op("ReduceMax", [s], axes=[2], keepdims=1)])
        scores.append(g.op("Concat", [background, s], axis=2))
    b = g.op("Concat", boxes, axis=1)
    s = g.op("Concat", scores, axis=1)
    g.save([(b, "boxes", [1, 3549, 4]), (s, "scores", [1, 3549, 81])], out)


def centernet(model, out):
    g = Graph(model)
    stride, scores, dist = HEADS[0]
    n = INPUT // stride
    _, _, ltrb = head(g, stride, dist)
    to_map = lambda x, c: g.op("Transpose", [g.op("Reshape", [x, g.const(np.array([1, n, n, c], np.int64))])], perm=[0, 3, 1, 2])
    heat = to_map(scores, 80)
    lt, rb = g.slice(ltrb, 0, 2, 2), g.slice(ltrb, 2, 4, 2)
    size = g.op("Div", [g.op("Add", [lt, rb]), g.const(np.array(stride, np.float32))])
    offset = g.op("Add", [g.const(np.array(0.5, np.float32)),
                          g.op("Div", [g.op("Sub", [rb, lt]), g.const(np.array(2.0 * stride, np.float32))])])
    g.save([(heat, "hm", [1, 80, n, n]), (to_map(size, 2), "wh", [1, 2, n, n]), (to_map(offset, 2), "reg", [1, 2, n, n])], out)


def main():
    model = onnx.load(sys.argv[1])
    out = sys.argv[2]
    yolo(model, f"{out}/yolo_rows.onnx", columns=False)
    yolo(model, f"{out}/yolo_columns.onnx", columns=True)
    ssd(model, f"{out}/ssd.onnx")
    centernet(model, f"{out}/centernet_s8.onnx")


if __name__ == "__main__":
    main()
