//! Builds the ONNX graph: one `[N, 1]` input per raw column, the fitted featurisation
//! (Imputer, Scaler, CategoryMapper, one-hot by `Equal`, missing indicators by `IsNaN`), a
//! `Concat` into the feature matrix, and the model.
//!
//! Precision: the featurisation runs in float32, as the trainer's own (`features`) does, so the
//! feature matrix is the same bit for bit. The model then runs in double on that matrix (one
//! `Cast`): linear scores, tree thresholds and leaf sums, MLP layers and the probability heads,
//! with the parameters the trainer predicts with. float32 arithmetic on large terms (a price-like
//! intercept in the millions, a standardised outlier times its coefficient, a forest's leaf sums)
//! put outputs on a coarse float32 grid: a value of -0.62 summed from terms in the thousands came
//! out on the 2^-11 grid. Now the only float32 roundings after the matrix are the outputs
//! themselves and, for gradient boosting's classifiers, the raw scores (`TreeEnsembleRegressor`
//! outputs float32). `parity` bounds exactly these. The graph's inputs and outputs are unchanged:
//! float32/string `[N, 1]` inputs, float32 `variable` or `probabilities` and int64 `label`.

use std::collections::HashSet;

use flywheel_core::model_card::{ColumnKind, InputColumn, ModelOutputs};
use prost::Message;

use super::proto::{
    AttributeProto, Dimension, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, TypeProtoTensor, ValueInfoProto, attribute_type, data_type,
};
use crate::boost::Loss;
use crate::data::{Feature, FeatureKind, MISSING_TOKENS};
use crate::features::{ColumnPlan, Featurizer};
use crate::linear::LinearModel;
use crate::mlp::{Activation, Head};
use crate::model::Model;
use crate::tree::{Objective, Tree};

pub const LABEL: &str = "label";
pub const PROBABILITIES: &str = "probabilities";
pub const VARIABLE: &str = "variable";
/// The classifier operators' own label output, unused (see `classifier_outputs`).
const RAW_LABEL: &str = "operator_label";

const ML_DOMAIN: &str = "ai.onnx.ml";
const ONNX_OPSET: i64 = 17;
const ML_OPSET: i64 = 3;
const IR_VERSION: i64 = 8;

pub struct Exported {
    pub bytes: Vec<u8>,
    pub inputs: Vec<InputColumn>,
    pub outputs: ModelOutputs,
}

/// An attribute value; the constructor picks the ONNX attribute type.
enum Attr {
    Int(i64),
    /// A double vector, as the `*_as_tensor` attributes of the tree ensembles take it.
    Doubles(Vec<f64>),
    Float(f32),
    Str(String),
    Ints(Vec<i64>),
    Floats(Vec<f32>),
    Strings(Vec<String>),
}

fn attribute(name: &str, value: Attr) -> AttributeProto {
    let mut a = AttributeProto {
        name: name.to_string(),
        ..Default::default()
    };
    match value {
        Attr::Int(v) => {
            a.i = v;
            a.r#type = attribute_type::INT;
        }
        Attr::Doubles(v) => {
            a.t = Some(TensorProto {
                dims: vec![v.len() as i64],
                data_type: data_type::DOUBLE,
                double_data: v,
                ..Default::default()
            });
            a.r#type = attribute_type::TENSOR;
        }
        Attr::Float(v) => {
            a.f = v;
            a.r#type = attribute_type::FLOAT;
        }
        Attr::Str(v) => {
            a.s = v.into_bytes();
            a.r#type = attribute_type::STRING;
        }
        Attr::Ints(v) => {
            a.ints = v;
            a.r#type = attribute_type::INTS;
        }
        Attr::Floats(v) => {
            a.floats = v;
            a.r#type = attribute_type::FLOATS;
        }
        Attr::Strings(v) => {
            a.strings = v.into_iter().map(String::into_bytes).collect();
            a.r#type = attribute_type::STRINGS;
        }
    }
    a
}

fn value_info(name: &str, elem_type: i32, dims: &[Option<i64>]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor {
                elem_type,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| match d {
                            Some(v) => Dimension {
                                dim_value: Some(*v),
                                dim_param: None,
                            },
                            None => Dimension {
                                dim_value: None,
                                dim_param: Some("N".into()),
                            },
                        })
                        .collect(),
                }),
            }),
        }),
        doc_string: String::new(),
    }
}

#[derive(Default)]
struct Graph {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    next: usize,
}

impl Graph {
    fn fresh(&mut self, hint: &str) -> String {
        self.next += 1;
        format!("{hint}_{}", self.next)
    }

    fn node(
        &mut self,
        op: &str,
        domain: &str,
        inputs: &[&str],
        outputs: &[&str],
        attributes: Vec<AttributeProto>,
    ) {
        let name = format!("{op}_{}", self.nodes.len());
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            name,
            op_type: op.to_string(),
            attribute: attributes,
            doc_string: String::new(),
            domain: domain.to_string(),
        });
    }

    /// A one-output node whose output gets a fresh name.
    fn op(
        &mut self,
        op: &str,
        domain: &str,
        inputs: &[&str],
        attributes: Vec<AttributeProto>,
    ) -> String {
        let out = self.fresh(&op.to_ascii_lowercase());
        self.node(op, domain, inputs, &[&out], attributes);
        out
    }

    fn const_floats(&mut self, values: Vec<f32>) -> String {
        let name = self.fresh("const");
        self.initializers.push(TensorProto {
            dims: vec![values.len() as i64],
            data_type: data_type::FLOAT,
            float_data: values,
            name: name.clone(),
            ..Default::default()
        });
        name
    }

    fn const_matrix(&mut self, values: Vec<f32>, rows: usize, columns: usize) -> String {
        let name = self.fresh("const");
        self.initializers.push(TensorProto {
            dims: vec![rows as i64, columns as i64],
            data_type: data_type::FLOAT,
            float_data: values,
            name: name.clone(),
            ..Default::default()
        });
        name
    }

    fn const_ints(&mut self, values: Vec<i64>) -> String {
        let name = self.fresh("const");
        self.initializers.push(TensorProto {
            dims: vec![values.len() as i64],
            data_type: data_type::INT64,
            int64_data: values,
            name: name.clone(),
            ..Default::default()
        });
        name
    }

    fn const_doubles(&mut self, values: Vec<f64>, dims: &[usize]) -> String {
        let name = self.fresh("const");
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: data_type::DOUBLE,
            double_data: values,
            name: name.clone(),
            ..Default::default()
        });
        name
    }

    fn cast(&mut self, input: &str, to: i32) -> String {
        self.op(
            "Cast",
            "",
            &[input],
            vec![attribute("to", Attr::Int(i64::from(to)))],
        )
    }

    fn cast_float(&mut self, input: &str) -> String {
        self.cast(input, data_type::FLOAT)
    }

    /// The double result `input` rounded once to the float32 graph output `output`.
    fn output_float(&mut self, input: &str, output: &str) {
        self.node(
            "Cast",
            "",
            &[input],
            &[output],
            vec![attribute("to", Attr::Int(i64::from(data_type::FLOAT)))],
        );
    }

    fn missing_indicator(&mut self, input: &str) -> String {
        let nan = self.op("IsNaN", "", &[input], vec![]);
        self.cast_float(&nan)
    }
}

/// ONNX input names: the column name with anything but `[A-Za-z0-9_]` replaced, unique.
pub fn input_names(features: &[Feature]) -> Vec<String> {
    let mut used = HashSet::new();
    features
        .iter()
        .map(|f| {
            let mut base: String = f
                .name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            if base.is_empty() || base.starts_with(|c: char| c.is_ascii_digit()) {
                base = format!("c_{base}");
            }
            let mut name = base.clone();
            let mut i = 2;
            while !used.insert(name.clone()) {
                name = format!("{base}_{i}");
                i += 1;
            }
            name
        })
        .collect()
}

pub fn export(features: &[Feature], featurizer: &Featurizer, model: &Model, doc: &str) -> Exported {
    let mut graph = Graph::default();
    let names = input_names(features);
    let mut graph_inputs = Vec::new();
    let mut card_inputs = Vec::new();
    let mut pieces: Vec<String> = Vec::new();
    for ((feature, plan), input) in features.iter().zip(&featurizer.plans).zip(&names) {
        let (kind, elem) = match feature.kind {
            FeatureKind::Strings { .. } => (ColumnKind::Categorical, data_type::STRING),
            FeatureKind::Boolean => (ColumnKind::Boolean, data_type::FLOAT),
            FeatureKind::Numeric | FeatureKind::IntegerCodes => {
                (ColumnKind::Numeric, data_type::FLOAT)
            }
        };
        graph_inputs.push(value_info(input, elem, &[None, Some(1)]));
        card_inputs.push(InputColumn {
            name: feature.name.clone(),
            input: input.clone(),
            kind,
            nullable: true,
        });
        match plan {
            ColumnPlan::Number {
                impute,
                indicator,
                scale,
            } => {
                let imputed = imputer(&mut graph, input, *impute);
                let value = match scale {
                    Some((offset, scale)) => graph.op(
                        "Scaler",
                        ML_DOMAIN,
                        &[&imputed],
                        vec![
                            attribute("offset", Attr::Floats(vec![*offset])),
                            attribute("scale", Attr::Floats(vec![*scale])),
                        ],
                    ),
                    None => imputed,
                };
                pieces.push(value);
                if *indicator {
                    pieces.push(graph.missing_indicator(input));
                }
            }
            ColumnPlan::Codes {
                impute,
                indicator,
                onehot,
            } => {
                let imputed = imputer(&mut graph, input, *impute);
                match onehot {
                    Some(values) => {
                        let constant = graph.const_floats(values.clone());
                        let equal = graph.op("Equal", "", &[&imputed, &constant], vec![]);
                        pieces.push(graph.cast_float(&equal));
                    }
                    None => pieces.push(imputed),
                }
                if *indicator {
                    pieces.push(graph.missing_indicator(input));
                }
            }
            ColumnPlan::Strings {
                levels,
                other,
                missing,
                onehot,
            } => {
                let mut cats: Vec<String> = levels.clone();
                let mut codes: Vec<i64> = (0..levels.len() as i64).collect();
                for token in MISSING_TOKENS {
                    cats.push((*token).to_string());
                    codes.push(*missing);
                }
                let mapped = graph.op(
                    "CategoryMapper",
                    ML_DOMAIN,
                    &[input],
                    vec![
                        attribute("cats_strings", Attr::Strings(cats)),
                        attribute("cats_int64s", Attr::Ints(codes)),
                        attribute("default_int64", Attr::Int(*other)),
                    ],
                );
                match onehot {
                    Some(width) => {
                        let constant = graph.const_ints((0..*width as i64).collect());
                        let equal = graph.op("Equal", "", &[&mapped, &constant], vec![]);
                        pieces.push(graph.cast_float(&equal));
                    }
                    None => pieces.push(graph.cast_float(&mapped)),
                }
            }
        }
    }
    let piece_refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
    let matrix = graph.op(
        "Concat",
        "",
        &piece_refs,
        vec![attribute("axis", Attr::Int(1))],
    );

    // The model computes in double on the float32 matrix (see the module comment).
    let matrix = graph.cast(&matrix, data_type::DOUBLE);
    let (outputs, card_outputs) = match model {
        Model::Linear {
            model,
            classes: Some(classes),
        } => {
            // A binary model's first row of coefficients is the logit of class 1.
            if *classes == 2 {
                let scores = linear_scores(&mut graph, &matrix, model, 1);
                binary_head(&mut graph, &scores)
            } else {
                let scores = linear_scores(&mut graph, &matrix, model, *classes);
                softmax_head(&mut graph, &scores, *classes)
            }
        }
        Model::Linear {
            model,
            classes: None,
        } => {
            let scores = linear_scores(&mut graph, &matrix, model, 1);
            graph.output_float(&scores, VARIABLE);
            regressor_outputs()
        }
        Model::Trees {
            trees,
            objective,
            scale,
        } => {
            let mut attrs = tree_structure(trees);
            match objective {
                Objective::Classes(classes) => {
                    let (tree_ids, node_ids, class_ids, weights) =
                        leaf_weights(trees, *scale, *classes);
                    attrs.extend([
                        attribute("class_treeids", Attr::Ints(tree_ids)),
                        attribute("class_nodeids", Attr::Ints(node_ids)),
                        attribute("class_ids", Attr::Ints(class_ids)),
                        attribute("class_weights_as_tensor", Attr::Doubles(weights)),
                        attribute(
                            "classlabels_int64s",
                            Attr::Ints((0..*classes as i64).collect()),
                        ),
                        attribute("post_transform", Attr::Str("NONE".into())),
                    ]);
                    graph.node(
                        "TreeEnsembleClassifier",
                        ML_DOMAIN,
                        &[&matrix],
                        &[RAW_LABEL, PROBABILITIES],
                        attrs,
                    );
                    classifier_outputs(&mut graph, *classes)
                }
                Objective::Regression => {
                    let (tree_ids, node_ids, target_ids, weights) = leaf_weights(trees, *scale, 1);
                    attrs.extend([
                        attribute("target_treeids", Attr::Ints(tree_ids)),
                        attribute("target_nodeids", Attr::Ints(node_ids)),
                        attribute("target_ids", Attr::Ints(target_ids)),
                        attribute("target_weights_as_tensor", Attr::Doubles(weights)),
                        attribute("n_targets", Attr::Int(1)),
                        attribute("aggregate_function", Attr::Str("SUM".into())),
                        attribute("post_transform", Attr::Str("NONE".into())),
                    ]);
                    graph.node(
                        "TreeEnsembleRegressor",
                        ML_DOMAIN,
                        &[&matrix],
                        &[VARIABLE],
                        attrs,
                    );
                    regressor_outputs()
                }
            }
        }
        Model::Mlp(mlp) => {
            let last = mlp.layers.len() - 1;
            let mut hidden = matrix.clone();
            for (l, layer) in mlp.layers.iter().enumerate() {
                // MatMul wants [inputs, outputs]; the layer stores [outputs][inputs]. The
                // weights are float32 values (`Mlp::round_to_f32`), stored as float32 to keep
                // the file small and widened exactly by a Cast that ONNX Runtime folds.
                let mut transposed = vec![0.0f32; layer.weights.len()];
                for o in 0..layer.outputs {
                    for i in 0..layer.inputs {
                        transposed[i * layer.outputs + o] =
                            layer.weights[o * layer.inputs + i] as f32;
                    }
                }
                let weights = graph.const_matrix(transposed, layer.inputs, layer.outputs);
                let weights = graph.cast(&weights, data_type::DOUBLE);
                let bias = graph.const_floats(layer.bias.iter().map(|v| *v as f32).collect());
                let bias = graph.cast(&bias, data_type::DOUBLE);
                let product = graph.op("MatMul", "", &[&hidden, &weights], vec![]);
                let sum = graph.op("Add", "", &[&product, &bias], vec![]);
                hidden = if l == last {
                    sum
                } else {
                    let op = match mlp.activation {
                        Activation::Relu => "Relu",
                        Activation::Tanh => "Tanh",
                        Activation::Sigmoid => "Sigmoid",
                    };
                    graph.op(op, "", &[&sum], vec![])
                };
            }
            match mlp.head {
                Head::Regression => {
                    graph.output_float(&hidden, VARIABLE);
                    regressor_outputs()
                }
                Head::Binary => binary_head(&mut graph, &hidden),
                Head::Softmax(classes) => softmax_head(&mut graph, &hidden, classes),
            }
        }
        Model::Boosted(booster) => {
            let k = booster.loss.outputs();
            let mut attrs = tree_structure(&booster.trees);
            let (tree_ids, node_ids, target_ids, weights) = boosted_weights(&booster.trees, k);
            let scores = if booster.loss == Loss::Squared {
                VARIABLE.to_string()
            } else {
                graph.fresh("scores")
            };
            attrs.extend([
                attribute("target_treeids", Attr::Ints(tree_ids)),
                attribute("target_nodeids", Attr::Ints(node_ids)),
                attribute("target_ids", Attr::Ints(target_ids)),
                attribute("target_weights_as_tensor", Attr::Doubles(weights)),
                attribute("n_targets", Attr::Int(k as i64)),
                attribute("aggregate_function", Attr::Str("SUM".into())),
                attribute("post_transform", Attr::Str("NONE".into())),
                attribute(
                    "base_values_as_tensor",
                    Attr::Doubles(booster.base.iter().map(|&b| f64::from(b as f32)).collect()),
                ),
            ]);
            graph.node(
                "TreeEnsembleRegressor",
                ML_DOMAIN,
                &[&matrix],
                &[&scores],
                attrs,
            );
            // The operator's output is float32 by the standard: the scores are rounded once
            // there (bounded by `parity`), and the head runs in double again.
            match booster.loss {
                Loss::Squared => regressor_outputs(),
                Loss::Logistic => {
                    let scores = graph.cast(&scores, data_type::DOUBLE);
                    binary_head(&mut graph, &scores)
                }
                Loss::Softmax(classes) => {
                    let scores = graph.cast(&scores, data_type::DOUBLE);
                    softmax_head(&mut graph, &scores, classes)
                }
            }
        }
    };

    let proto = ModelProto {
        ir_version: IR_VERSION,
        producer_name: "flywheel-trainer".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        domain: "dev.flywheel".into(),
        model_version: 1,
        doc_string: doc.to_string(),
        graph: Some(GraphProto {
            node: graph.nodes,
            name: "flywheel_pipeline".into(),
            initializer: graph.initializers,
            doc_string: String::new(),
            input: graph_inputs,
            output: outputs,
            value_info: Vec::new(),
        }),
        opset_import: vec![
            OperatorSetIdProto {
                domain: String::new(),
                version: ONNX_OPSET,
            },
            OperatorSetIdProto {
                domain: ML_DOMAIN.into(),
                version: ML_OPSET,
            },
        ],
        metadata_props: Vec::new(),
    };
    Exported {
        bytes: proto.encode_to_vec(),
        inputs: card_inputs,
        outputs: card_outputs,
    }
}

/// `intercept + matrix · coefᵀ` in double for the first `outputs` rows of coefficients,
/// `[N, outputs]`, with the trainer's coefficients exactly (not rounded to float32: a large
/// intercept would lose its low digits).
fn linear_scores(graph: &mut Graph, matrix: &str, model: &LinearModel, outputs: usize) -> String {
    let inputs = model.coef.first().map_or(0, Vec::len);
    let mut transposed = vec![0.0f64; outputs * inputs];
    for (o, row) in model.coef.iter().take(outputs).enumerate() {
        for (i, w) in row.iter().enumerate() {
            transposed[i * outputs + o] = *w;
        }
    }
    let weights = graph.const_doubles(transposed, &[inputs, outputs]);
    let bias = graph.const_doubles(model.intercept[..outputs].to_vec(), &[outputs]);
    let product = graph.op("MatMul", "", &[matrix, &weights], vec![]);
    graph.op("Add", "", &[&product, &bias], vec![])
}

/// One double logit `[N, 1]` to float32 `[1 - p, p]`.
fn binary_head(graph: &mut Graph, scores: &str) -> (Vec<ValueInfoProto>, ModelOutputs) {
    let p1 = graph.op("Sigmoid", "", &[scores], vec![]);
    let one = graph.const_doubles(vec![1.0], &[1]);
    let p0 = graph.op("Sub", "", &[&one, &p1], vec![]);
    let both = graph.op(
        "Concat",
        "",
        &[&p0, &p1],
        vec![attribute("axis", Attr::Int(1))],
    );
    graph.output_float(&both, PROBABILITIES);
    classifier_outputs(graph, 2)
}

/// Double scores `[N, classes]` to float32 probabilities.
fn softmax_head(
    graph: &mut Graph,
    scores: &str,
    classes: usize,
) -> (Vec<ValueInfoProto>, ModelOutputs) {
    let probabilities = graph.op(
        "Softmax",
        "",
        &[scores],
        vec![attribute("axis", Attr::Int(1))],
    );
    graph.output_float(&probabilities, PROBABILITIES);
    classifier_outputs(graph, classes)
}

fn imputer(graph: &mut Graph, input: &str, value: f32) -> String {
    graph.op(
        "Imputer",
        ML_DOMAIN,
        &[input],
        vec![
            attribute("imputed_value_floats", Attr::Floats(vec![value])),
            attribute("replaced_value_float", Attr::Float(f32::NAN)),
        ],
    )
}

/// The label is the arg-max of the probabilities rather than the operator's own label output:
/// ONNX Runtime's two-class tree ensemble labels by the sign of the class-1 score, which is
/// always positive for probabilities. ArgMax takes the first maximum, as the trainer does.
fn classifier_outputs(graph: &mut Graph, classes: usize) -> (Vec<ValueInfoProto>, ModelOutputs) {
    graph.node(
        "ArgMax",
        "",
        &[PROBABILITIES],
        &[LABEL],
        vec![
            attribute("axis", Attr::Int(1)),
            attribute("keepdims", Attr::Int(0)),
        ],
    );
    (
        vec![
            value_info(LABEL, data_type::INT64, &[None]),
            value_info(
                PROBABILITIES,
                data_type::FLOAT,
                &[None, Some(classes as i64)],
            ),
        ],
        ModelOutputs {
            label: LABEL.into(),
            probabilities: Some(PROBABILITIES.into()),
        },
    )
}

fn regressor_outputs() -> (Vec<ValueInfoProto>, ModelOutputs) {
    (
        vec![value_info(VARIABLE, data_type::FLOAT, &[None, Some(1)])],
        ModelOutputs {
            label: VARIABLE.into(),
            probabilities: None,
        },
    )
}

/// The `nodes_*` attributes shared by both tree ensemble operators.
fn tree_structure(trees: &[Tree]) -> Vec<AttributeProto> {
    let mut tree_ids = Vec::new();
    let mut node_ids = Vec::new();
    let mut feature_ids = Vec::new();
    let mut values = Vec::new();
    let mut modes = Vec::new();
    let mut true_ids = Vec::new();
    let mut false_ids = Vec::new();
    for (t, tree) in trees.iter().enumerate() {
        for (n, node) in tree.nodes.iter().enumerate() {
            tree_ids.push(t as i64);
            node_ids.push(n as i64);
            if node.is_leaf() {
                feature_ids.push(0);
                values.push(0.0);
                modes.push("LEAF".to_string());
                true_ids.push(0);
                false_ids.push(0);
            } else {
                feature_ids.push(i64::from(node.feature));
                values.push(f64::from(node.threshold));
                modes.push("BRANCH_LEQ".to_string());
                true_ids.push(i64::from(node.left));
                false_ids.push(i64::from(node.right));
            }
        }
    }
    vec![
        attribute("nodes_treeids", Attr::Ints(tree_ids)),
        attribute("nodes_nodeids", Attr::Ints(node_ids)),
        attribute("nodes_featureids", Attr::Ints(feature_ids)),
        // The float32 thresholds widened exactly: a float32 feature widened to double falls on
        // the same side of them as in float32, which is how the trainer routes rows.
        attribute("nodes_values_as_tensor", Attr::Doubles(values)),
        attribute("nodes_modes", Attr::Strings(modes)),
        attribute("nodes_truenodeids", Attr::Ints(true_ids)),
        attribute("nodes_falsenodeids", Attr::Ints(false_ids)),
    ]
}

/// Leaf weights `value * scale` rounded to float32 as `model::accumulate` adds them, per (tree,
/// leaf, output), skipping zeros to keep the file small, except with two classes: ONNX Runtime (1.32) drops a binary class without a weight
/// from the probabilities, so both are written for every leaf. Every class appears at least
/// once, so a degenerate ensemble still has the output width it declares.
fn leaf_weights(
    trees: &[Tree],
    scale: f64,
    width: usize,
) -> (Vec<i64>, Vec<i64>, Vec<i64>, Vec<f64>) {
    let mut tree_ids = Vec::new();
    let mut node_ids = Vec::new();
    let mut ids = Vec::new();
    let mut weights = Vec::new();
    let mut seen = vec![false; width];
    let mut first_leaf = None;
    for (t, tree) in trees.iter().enumerate() {
        for (n, node) in tree.nodes.iter().enumerate() {
            if !node.is_leaf() {
                continue;
            }
            first_leaf.get_or_insert((t, n));
            for (k, v) in node.value.iter().enumerate().take(width) {
                let w = f64::from((v * scale) as f32);
                if w != 0.0 || width <= 2 {
                    tree_ids.push(t as i64);
                    node_ids.push(n as i64);
                    ids.push(k as i64);
                    weights.push(w);
                    seen[k] = true;
                }
            }
        }
    }
    if let Some((t, n)) = first_leaf {
        for (k, seen) in seen.iter().enumerate() {
            if !seen {
                tree_ids.push(t as i64);
                node_ids.push(n as i64);
                ids.push(k as i64);
                weights.push(0.0);
            }
        }
    }
    (tree_ids, node_ids, ids, weights)
}

/// Boosted trees' leaf values per output (rounded to float32 as `boost::add_tree` adds them):
/// tree `t` adds to output `t % outputs`.
fn boosted_weights(trees: &[Tree], outputs: usize) -> (Vec<i64>, Vec<i64>, Vec<i64>, Vec<f64>) {
    let mut tree_ids = Vec::new();
    let mut node_ids = Vec::new();
    let mut ids = Vec::new();
    let mut weights = Vec::new();
    for (t, tree) in trees.iter().enumerate() {
        for (n, node) in tree.nodes.iter().enumerate() {
            if node.is_leaf() {
                tree_ids.push(t as i64);
                node_ids.push(n as i64);
                ids.push((t % outputs) as i64);
                weights.push(f64::from(node.value.first().copied().unwrap_or(0.0) as f32));
            }
        }
    }
    (tree_ids, node_ids, ids, weights)
}
