//! Composes the members' exported pipelines into ONE ONNX graph: every member's nodes,
//! initializers and intermediate values get a `m<i>_` prefix, the raw-column inputs stay shared,
//! and the members' probabilities (or values) are weighted (`Mul`) and summed (`Sum`); a
//! classifier's label is the `ArgMax` of the sum. Inputs and outputs keep the single-model
//! names, so the prediction server serves an ensemble like any other model.

use std::collections::{BTreeMap, HashSet};

use flywheel_core::model_card::ModelCard;
use prost::Message;

use crate::error::{Result, TrainerError};
use crate::onnx::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, attribute_type, data_type,
};

/// One member as the composer needs it.
pub struct MemberGraph<'a> {
    /// The trial's name, for errors and lineage.
    pub trial: &'a str,
    pub card: &'a ModelCard,
    pub onnx: &'a [u8],
    pub weight: f32,
}

/// The member's model, refusing one that holds ONNX fields this crate's protobuf subset does not
/// carry (sub-graphs, sparse initializers, …): decoding would drop them silently.
fn decode(member: &MemberGraph) -> Result<ModelProto> {
    let model = ModelProto::decode(member.onnx).map_err(|e| {
        TrainerError::bad_input(format!(
            "failed to read the onnx model of member {}: {e}",
            member.trial
        ))
    })?;
    if model.encoded_len() != member.onnx.len() {
        return Err(TrainerError::bad_input(format!(
            "member {} uses onnx features the ensemble composer does not carry (sub-graphs, \
             sparse or external tensors); only built-in trainer models can be ensembled",
            member.trial
        )));
    }
    Ok(model)
}

fn scalar(name: &str, value: f32) -> TensorProto {
    TensorProto {
        dims: Vec::new(),
        data_type: data_type::FLOAT,
        float_data: vec![value],
        name: name.to_string(),
        ..Default::default()
    }
}

fn node(op: &str, name: &str, inputs: Vec<String>, output: &str) -> NodeProto {
    NodeProto {
        input: inputs,
        output: vec![output.to_string()],
        name: name.to_string(),
        op_type: op.to_string(),
        ..Default::default()
    }
}

/// Drops the nodes nothing reads any more (the members' own label heads) and the initializers
/// only they read: ONNX Runtime would otherwise compute them on every request.
fn prune(graph: &mut GraphProto) {
    loop {
        let mut read: HashSet<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
        read.extend(
            graph
                .node
                .iter()
                .flat_map(|n| n.input.iter().map(String::as_str)),
        );
        let before = graph.node.len();
        let keep: Vec<bool> = graph
            .node
            .iter()
            .map(|n| n.output.iter().any(|o| read.contains(o.as_str())))
            .collect();
        let mut keep = keep.into_iter();
        graph.node.retain(|_| keep.next().unwrap_or(true));
        if graph.node.len() == before {
            break;
        }
    }
    let read: HashSet<String> = graph
        .node
        .iter()
        .flat_map(|n| n.input.iter().cloned())
        .collect();
    graph.initializer.retain(|t| read.contains(&t.name));
    let produced: HashSet<String> = graph
        .node
        .iter()
        .flat_map(|n| n.output.iter().cloned())
        .collect();
    graph.value_info.retain(|v| produced.contains(&v.name));
}

/// The composed model's bytes. The members' schemas must already agree (see
/// [`super::check_schema`]); the first member's inputs and outputs become the ensemble's.
pub fn compose(members: &[MemberGraph], doc: &str) -> Result<Vec<u8>> {
    let first = members
        .first()
        .ok_or_else(|| TrainerError::bad_input("an ensemble needs at least one member"))?;
    let outputs = &first.card.outputs;
    let classification = outputs.probabilities.is_some();
    // The value each member contributes: its probabilities, or its regression output.
    let contributed = outputs
        .probabilities
        .clone()
        .unwrap_or_else(|| outputs.label.clone());

    let mut graph = GraphProto {
        name: "flywheel_ensemble".into(),
        doc_string: doc.to_string(),
        ..Default::default()
    };
    let mut opsets: BTreeMap<String, i64> = BTreeMap::new();
    let mut ir_version = 0;
    let mut weighted = Vec::with_capacity(members.len());
    for (i, member) in members.iter().enumerate() {
        let model = decode(member)?;
        ir_version = ir_version.max(model.ir_version);
        for opset in &model.opset_import {
            let version = opsets.entry(opset.domain.clone()).or_default();
            *version = (*version).max(opset.version);
        }
        let mut member_graph = model.graph.ok_or_else(|| {
            TrainerError::bad_input(format!(
                "the onnx model of member {} has no graph",
                member.trial
            ))
        })?;
        if i == 0 {
            graph.input = member_graph.input.clone();
            graph.output = member_graph.output.clone();
        } else if member_graph.input != graph.input {
            return Err(TrainerError::bad_input(format!(
                "member {} has other onnx inputs than member {}: ensemble members must be \
                 trained on the same dataset and target",
                member.trial, first.trial
            )));
        }
        if !member_graph.output.iter().any(|o| o.name == contributed) {
            return Err(TrainerError::bad_input(format!(
                "member {} has no onnx output {contributed:?}",
                member.trial
            )));
        }
        let shared: HashSet<String> = member_graph.input.iter().map(|v| v.name.clone()).collect();
        let prefix = format!("m{i}_");
        let rename = |name: &mut String| {
            if !name.is_empty() && !shared.contains(name.as_str()) {
                name.insert_str(0, &prefix);
            }
        };
        for n in &mut member_graph.node {
            n.input.iter_mut().for_each(rename);
            n.output.iter_mut().for_each(rename);
            rename(&mut n.name);
        }
        for t in &mut member_graph.initializer {
            rename(&mut t.name);
        }
        for v in &mut member_graph.value_info {
            rename(&mut v.name);
        }
        graph.node.append(&mut member_graph.node);
        graph.initializer.append(&mut member_graph.initializer);
        graph.value_info.append(&mut member_graph.value_info);

        let weight = format!("ensemble_weight_{i}");
        let product = format!("ensemble_weighted_{i}");
        graph.initializer.push(scalar(&weight, member.weight));
        graph.node.push(node(
            "Mul",
            &format!("ensemble_mul_{i}"),
            vec![format!("{prefix}{contributed}"), weight],
            &product,
        ));
        weighted.push(product);
    }
    graph
        .node
        .push(node("Sum", "ensemble_sum", weighted, &contributed));
    if classification {
        let mut argmax = node(
            "ArgMax",
            "ensemble_label",
            vec![contributed.clone()],
            &outputs.label,
        );
        argmax.attribute = vec![
            AttributeProto {
                name: "axis".into(),
                i: 1,
                r#type: attribute_type::INT,
                ..Default::default()
            },
            AttributeProto {
                name: "keepdims".into(),
                i: 0,
                r#type: attribute_type::INT,
                ..Default::default()
            },
        ];
        graph.node.push(argmax);
    }
    // Only the final outputs remain graph outputs; the members' own are intermediate now.
    graph
        .output
        .retain(|o| o.name == contributed || (classification && o.name == outputs.label));
    prune(&mut graph);

    let trials: Vec<String> = members
        .iter()
        .map(|m| format!("{}={}", m.trial, m.weight))
        .collect();
    let model = ModelProto {
        ir_version,
        producer_name: "flywheel-trainer".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: doc.to_string(),
        graph: Some(graph),
        opset_import: opsets
            .into_iter()
            .map(|(domain, version)| OperatorSetIdProto { domain, version })
            .collect(),
        metadata_props: vec![StringStringEntryProto {
            key: "flywheel.ensemble".into(),
            value: trials.join(","),
        }],
        ..Default::default()
    };
    Ok(model.encode_to_vec())
}
