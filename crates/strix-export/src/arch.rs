//! Each architecture's forward pass written out as ONNX nodes. These walks mirror the burn
//! `forward` methods op for op; the export gate checks that they agree.

use burn::nn::{BatchNorm, Linear};
use burn::prelude::*;
use strix_train::detect::eval::output_names;
use strix_train::detect::model::{ConvBn, Detector, DetectorShape, STRIDES, TAPS, WIDTH};
use strix_train::layers::{Conv, Padding, tf_same};
use strix_train::models::efficientnet::EfficientNetLite;
use strix_train::models::resnet::{Block, ResNet};
use strix_train::models::{Backbone, SmallCnn};
use strix_train::{Classifier, ModelShape};

use crate::graph::{Graph, float, int, ints};

fn host<const D: usize>(t: Tensor<D>) -> (Vec<usize>, Vec<f32>) {
    let data = t.into_data().convert::<f32>();
    let dims = data.shape().to_vec();
    (dims, data.try_to_vec::<f32>().unwrap_or_default())
}

/// A value in the graph and its spatial size.
#[derive(Clone)]
struct Value {
    name: String,
    hw: [usize; 2],
}

struct Writer {
    g: Graph,
}

impl Writer {
    fn conv(&mut self, x: &Value, conv: &Conv, path: &str) -> Value {
        let (dims, w) = host(conv.weight.val());
        let weight = self.g.weight(&format!("{path}.weight"), &dims, &w);
        let mut inputs = vec![x.name.clone(), weight];
        if let Some(b) = &conv.bias {
            let (bd, bv) = host(b.val());
            inputs.push(self.g.weight(&format!("{path}.bias"), &bd, &bv));
        }
        let (k, s) = (dims[2], conv.stride);
        // ONNX pads: [h_begin, w_begin, h_end, w_end]; TF "SAME" is worked out for this input
        // size exactly as layers::Conv does at run time.
        let (ph, pw) = match conv.padding {
            Padding::Symmetric(p) => ((p, p), (p, p)),
            Padding::TfSame => (tf_same(x.hw[0], k, s), tf_same(x.hw[1], k, s)),
        };
        let attrs = vec![
            ints("kernel_shape", &[k, k]),
            ints("strides", &[s, s]),
            ints("pads", &[ph.0, pw.0, ph.1, pw.1]),
            ints("dilations", &[1, 1]),
            int("group", conv.groups as i64),
        ];
        let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let name = self.g.node("Conv", &refs, attrs);
        let out = |n: usize, (a, b): (usize, usize)| (n + a + b - k) / s + 1;
        Value { name, hw: [out(x.hw[0], ph), out(x.hw[1], pw)] }
    }

    fn bn(&mut self, x: &Value, bn: &BatchNorm, path: &str) -> Value {
        let parts = [
            ("weight", host(bn.gamma.val())),
            ("bias", host(bn.beta.val())),
            ("running_mean", host(bn.running_mean.value())),
            ("running_var", host(bn.running_var.value())),
        ];
        let names: Vec<String> = parts.iter().map(|(k, (d, v))| self.g.weight(&format!("{path}.{k}"), d, v)).collect();
        let inputs: Vec<&str> = std::iter::once(x.name.as_str()).chain(names.iter().map(String::as_str)).collect();
        let name = self.g.node("BatchNormalization", &inputs, vec![float("epsilon", bn.epsilon as f32)]);
        Value { name, hw: x.hw }
    }

    fn unary(&mut self, op: &str, x: &Value) -> Value {
        Value { name: self.g.node(op, &[&x.name], vec![]), hw: x.hw }
    }

    fn relu6(&mut self, x: &Value) -> Value {
        let lo = self.g.scalar("relu6.min", 0.0);
        let hi = self.g.scalar("relu6.max", 6.0);
        Value { name: self.g.node("Clip", &[&x.name, &lo, &hi], vec![]), hw: x.hw }
    }

    fn add(&mut self, a: &Value, b: &Value) -> Value {
        Value { name: self.g.node("Add", &[&a.name, &b.name], vec![]), hw: a.hw }
    }

    fn max_pool(&mut self, x: &Value, kernel: usize, stride: usize, pad: usize) -> Value {
        let attrs =
            vec![ints("kernel_shape", &[kernel, kernel]), ints("strides", &[stride, stride]), ints("pads", &[pad; 4])];
        let name = self.g.node("MaxPool", &[&x.name], attrs);
        let out = |n: usize| (n + 2 * pad - kernel) / stride + 1;
        Value { name, hw: [out(x.hw[0]), out(x.hw[1])] }
    }

    /// `[n, c, h, w]` -> `[n, c]`, the mean over the spatial axes.
    fn global_avg_pool(&mut self, x: &Value) -> String {
        let pooled = self.g.node("GlobalAveragePool", &[&x.name], vec![]);
        self.g.node("Flatten", &[&pooled], vec![int("axis", 1)])
    }

    /// burn keeps Linear weights `[in, out]`: `y = x W + b` is Gemm without transposes.
    fn linear(&mut self, x: &str, linear: &Linear, path: &str) -> String {
        let (dims, w) = host(linear.weight.val());
        let weight = self.g.weight(&format!("{path}.weight"), &dims, &w);
        let mut inputs = vec![x.to_string(), weight];
        if let Some(b) = &linear.bias {
            let (bd, bv) = host(b.val());
            inputs.push(self.g.weight(&format!("{path}.bias"), &bd, &bv));
        }
        let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        self.g.node("Gemm", &refs, vec![])
    }

    fn small_cnn(&mut self, x: Value, m: &SmallCnn) -> String {
        let x = self.conv(&x, &m.conv1, "conv1");
        let x = self.bn(&x, &m.bn1, "bn1");
        let x = self.unary("Relu", &x);
        let x = self.max_pool(&x, 2, 2, 0);
        let x = self.conv(&x, &m.conv2, "conv2");
        let x = self.bn(&x, &m.bn2, "bn2");
        let x = self.unary("Relu", &x);
        let x = self.max_pool(&x, 2, 2, 0);
        let flat = self.g.node("Flatten", &[&x.name], vec![int("axis", 1)]);
        let hidden = self.linear(&flat, &m.fc, "fc");
        self.g.node("Relu", &[&hidden], vec![])
    }

    fn block(&mut self, x: &Value, b: &Block, path: &str) -> Value {
        let skip = match &b.downsample {
            Some(d) => {
                let s = self.conv(x, &d.conv, &format!("{path}.downsample.0"));
                self.bn(&s, &d.bn, &format!("{path}.downsample.1"))
            }
            None => x.clone(),
        };
        let y = self.conv(x, &b.conv1, &format!("{path}.conv1"));
        let y = self.bn(&y, &b.bn1, &format!("{path}.bn1"));
        let y = self.unary("Relu", &y);
        let y = self.conv(&y, &b.conv2, &format!("{path}.conv2"));
        let mut y = self.bn(&y, &b.bn2, &format!("{path}.bn2"));
        if let (Some(c), Some(bn)) = (&b.conv3, &b.bn3) {
            let r = self.unary("Relu", &y);
            let c3 = self.conv(&r, c, &format!("{path}.conv3"));
            y = self.bn(&c3, bn, &format!("{path}.bn3"));
        }
        let sum = self.add(&y, &skip);
        self.unary("Relu", &sum)
    }

    fn resnet(&mut self, x: Value, m: &ResNet) -> String {
        let x = self.conv(&x, &m.conv1, "conv1");
        let x = self.bn(&x, &m.bn1, "bn1");
        let x = self.unary("Relu", &x);
        let mut x = self.max_pool(&x, 3, 2, 1);
        for (stage, blocks) in m.layers.iter().enumerate() {
            for (i, b) in blocks.iter().enumerate() {
                x = self.block(&x, b, &format!("layer{}.{i}", stage + 1));
            }
        }
        self.global_avg_pool(&x)
    }

    /// The stem and blocks `0..blocks`; the outputs of the blocks in `taps`.
    fn efficientnet_blocks(
        &mut self,
        x: Value,
        m: &EfficientNetLite,
        blocks: usize,
        taps: &[usize],
    ) -> (Value, Vec<Value>) {
        let x = self.conv(&x, &m.stem, "_conv_stem");
        let x = self.bn(&x, &m.bn0, "_bn0");
        let mut x = self.relu6(&x);
        let mut tapped = Vec::new();
        for (i, b) in m.blocks.iter().enumerate().take(blocks) {
            let path = format!("_blocks.{i}");
            let mut y = x.clone();
            if let (Some(c), Some(bn)) = (&b.expand, &b.bn0) {
                let e = self.conv(&y, c, &format!("{path}._expand_conv"));
                let e = self.bn(&e, bn, &format!("{path}._bn0"));
                y = self.relu6(&e);
            }
            let d = self.conv(&y, &b.depthwise, &format!("{path}._depthwise_conv"));
            let d = self.bn(&d, &b.bn1, &format!("{path}._bn1"));
            let d = self.relu6(&d);
            let p = self.conv(&d, &b.project, &format!("{path}._project_conv"));
            let p = self.bn(&p, &b.bn2, &format!("{path}._bn2"));
            x = if b.residual { self.add(&p, &x) } else { p };
            if taps.contains(&i) {
                tapped.push(x.clone());
            }
        }
        (x, tapped)
    }

    fn efficientnet(&mut self, x: Value, m: &EfficientNetLite) -> String {
        let (x, _) = self.efficientnet_blocks(x, m, m.blocks.len(), &[]);
        let x = self.conv(&x, &m.head, "_conv_head");
        let x = self.bn(&x, &m.bn1, "_bn1");
        let x = self.relu6(&x);
        self.global_avg_pool(&x)
    }

    /// Nearest 2x upsampling as burn's `upsample2` does it: reshape, broadcast, reshape.
    fn upsample2(&mut self, x: &Value, channels: usize) -> Value {
        let [h, w] = x.hw;
        let s1 = self.g.int64s(&format!("up.{h}x{w}.shape1"), &[-1, 1, w as i64, 1]);
        let e = self.g.int64s("up.expand", &[1, 2, 1, 2]);
        let s2 = self.g.int64s(&format!("up.{h}x{w}.shape2"), &[-1, channels as i64, 2 * h as i64, 2 * w as i64]);
        let r = self.g.node("Reshape", &[&x.name, &s1], vec![]);
        let r = self.g.node("Expand", &[&r, &e], vec![]);
        Value { name: self.g.node("Reshape", &[&r, &s2], vec![]), hw: [2 * h, 2 * w] }
    }

    fn downsample2(&mut self, x: &Value) -> Value {
        let attrs = vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])];
        Value { name: self.g.node("AveragePool", &[&x.name], attrs), hw: [x.hw[0] / 2, x.hw[1] / 2] }
    }

    fn conv_bn(&mut self, x: &Value, c: &ConvBn, path: &str) -> Value {
        let y = self.conv(x, &c.conv, &format!("{path}.conv"));
        let y = self.bn(&y, &c.bn, &format!("{path}.bn"));
        if c.relu { self.relu6(&y) } else { y }
    }

    /// A level's `[N, K, h, w]` output as `[N, h * w, classes]` sigmoid scores and
    /// `[N, h * w, K - classes]` distance logits.
    fn level_outputs(&mut self, x: &Value, k: usize, classes: usize, level: usize) -> (String, String) {
        let cells = x.hw[0] * x.hw[1];
        let shape = self.g.int64s(&format!("level{level}.shape"), &[0, k as i64, cells as i64]);
        let flat = self.g.node("Reshape", &[&x.name, &shape], vec![]);
        let t = self.g.node("Transpose", &[&flat], vec![ints("perm", &[0, 2, 1])]);
        let axes = self.g.int64s("slice.axis2", &[2]);
        let zero = self.g.int64s("slice.0", &[0]);
        let c = self.g.int64s(&format!("slice.{classes}"), &[classes as i64]);
        let end = self.g.int64s(&format!("slice.{k}"), &[k as i64]);
        let cls = self.g.node("Slice", &[&t, &zero, &c, &axes], vec![]);
        let scores = self.g.node("Sigmoid", &[&cls], vec![]);
        let dist = self.g.node("Slice", &[&t, &c, &end, &axes], vec![]);
        (scores, dist)
    }
}

/// The detector as an ONNX model: `[N, 3, h, w]` preprocessed images in, per stride `s` the
/// outputs the `nanodet` decoder reads (`cls_pred_stride_s` `[N, cells, classes]` after a
/// sigmoid, `dis_pred_stride_s` `[N, cells, 4 * (reg_max + 1)]`).
pub fn detector(model: &Detector, shape: &DetectorShape, metadata: &[(String, String)]) -> tract_onnx::pb::ModelProto {
    let mut w = Writer { g: Graph::default() };
    let (iw, ih) = shape.input;
    let x = Value { name: INPUT.into(), hw: [ih, iw] };
    let (_, taps) = w.efficientnet_blocks(x, &model.backbone, TAPS[2] + 1, &TAPS);
    let l: Vec<Value> =
        taps.iter().zip(&model.lateral).enumerate().map(|(i, (t, c))| w.conv(t, c, &format!("lateral.{i}"))).collect();
    let up5 = w.upsample2(&l[2], WIDTH);
    let p4 = w.add(&l[1], &up5);
    let up4 = w.upsample2(&p4, WIDTH);
    let p3 = w.add(&l[0], &up4);
    let d3 = w.downsample2(&p3);
    let n4 = w.add(&p4, &d3);
    let d4 = w.downsample2(&n4);
    let n5 = w.add(&l[2], &d4);
    let mut outputs = Vec::new();
    for (level, (f, head)) in [p3, n4, n5].iter().zip(&model.head).enumerate() {
        let mut y = f.clone();
        for (j, b) in head.blocks.iter().enumerate() {
            y = w.conv_bn(&y, b, &format!("head.{level}.blocks.{j}"));
        }
        let y = w.conv(&y, &head.out, &format!("head.{level}.out"));
        let (scores, dist) = w.level_outputs(&y, shape.outputs(), shape.classes, level);
        let (sn, dn) = output_names(STRIDES[level]);
        let cells = y.hw[0] * y.hw[1];
        outputs.push((scores, sn, vec![cells, shape.classes]));
        outputs.push((dist, dn, vec![cells, 4 * shape.bins()]));
    }
    w.g.into_model_outputs(INPUT, &[3, ih, iw], &outputs, metadata)
}

/// Input and output names of every exported classifier.
pub const INPUT: &str = "input";
pub const OUTPUT: &str = "logits";
/// The second output: the pooled features the head reads, `[N, features]`, what an embed spec
/// of the export (`embed.toml`) reads.
pub const EMBEDDING: &str = "embedding";

/// The classifier as an ONNX model taking `[N, channels, size, size]` preprocessed images and
/// giving `[N, classes]` logits. Dropout is the identity at inference and is left out.
pub fn classifier(model: &Classifier, shape: &ModelShape, metadata: &[(String, String)]) -> tract_onnx::pb::ModelProto {
    let mut w = Writer { g: Graph::default() };
    let x = Value { name: INPUT.into(), hw: [shape.image_size; 2] };
    let features = match &model.backbone {
        Backbone::SmallCnn(m) => w.small_cnn(x, m),
        Backbone::ResNet(m) => w.resnet(x, m),
        Backbone::EfficientNet(m) => w.efficientnet(x, m),
    };
    let head = shape.arch.head_name();
    let logits = w.linear(&features, &model.head, head);
    let outputs = [
        (logits, OUTPUT.to_string(), vec![shape.classes]),
        (features, EMBEDDING.to_string(), vec![Classifier::features_of(shape.arch)]),
    ];
    w.g.into_model_outputs(INPUT, &[shape.channels, shape.image_size, shape.image_size], &outputs, metadata)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use prost::Message;
    use strix_runtime::Backend;
    use strix_train::Arch;

    use super::*;
    use crate::gate;

    /// Random-init models of each family (odd input sizes, so TF "SAME" pads unevenly),
    /// exported and run on tract: the logits are burn's.
    #[test]
    fn exports_of_every_family_match_burn_on_tract() {
        let dir = tempfile::tempdir().unwrap();
        for (arch, channels, size) in [
            (Arch::SmallCnn, 1, 12),
            (Arch::Resnet18, 3, 33),
            (Arch::Resnet50, 3, 17),
            (Arch::EfficientnetLite0, 3, 37),
        ] {
            let device = Device::flex();
            device.seed(7);
            let shape = ModelShape { arch, classes: 5, channels, image_size: size };
            let model = Classifier::new(&shape, None, &device).unwrap();
            let path = dir.path().join(format!("{arch}.onnx"));
            std::fs::write(&path, classifier(&model, &shape, &[]).encode_to_vec()).unwrap();
            let n = 2;
            let images: Vec<f32> =
                (0..n * channels * size * size).map(|i| ((i * 7919) % 255) as f32 / 64.0 - 2.0).collect();
            // The logits, then the embedding the head reads.
            let (logits, features) = model.logits_and_features(images.clone(), n, channels, size, &device);
            assert_eq!(features.len(), n * Classifier::features_of(arch), "{arch}");
            let report = gate::gate_outputs(
                &path,
                &images,
                [n, channels, size, size],
                gate::Expected { reference: &logits, top1: Some(5), every_output: false },
                &gate::Engines { backends: vec![Backend::Tract], ..Default::default() },
                Default::default(),
                &mut |backend, outputs| {
                    assert_eq!(outputs.len(), 2);
                    gate::same_direction(backend, outputs.get(1), &features, n)
                },
            )
            .unwrap();
            assert!(report.passed(), "{arch}: {report}");
            assert_eq!(report.checks[0].top1_agree, n, "{arch}");
        }
    }
}
