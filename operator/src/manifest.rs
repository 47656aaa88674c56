//! Reading and validating Flywheel manifests on the client side, with the same rules the API
//! server applies to the generated CRDs (schema, then CEL) followed by Flywheel's semantic rules.

use flywheel_core::api::{self, CustomResourceDefinition, ModelDeployment, Study, Trial};
use flywheel_core::validate::{
    FieldError, dns1123_subdomain_errors, invalid_name, trial_name_errors, validate_deployment,
    validate_study,
};
use kube::ResourceExt;
use serde_json::Value;

use crate::schema_check;

/// Parses one YAML (or JSON) document and checks it as a Study.
pub fn parse_study(text: &str) -> Result<Study, Vec<FieldError>> {
    let value = parse_yaml(text)?;
    let crd = crd_for(&value)?;
    if crd.spec.names.kind != "Study" {
        return Err(vec![FieldError::new(
            "kind",
            format!("expected a Study, got a {}", crd.spec.names.kind),
        )]);
    }
    check_against_crd(&crd, &value)?;
    let study: Study = read_as(value)?;
    let errors = validate_study(&study);
    if errors.is_empty() {
        Ok(study)
    } else {
        Err(errors)
    }
}

/// Checks any Flywheel manifest (Study, Trial or ModelDeployment); Studies also get the
/// semantic rules, and every kind the limits of the names derived from its own. Returns the kind
/// on success.
pub fn validate_manifest(text: &str) -> Result<String, Vec<FieldError>> {
    let kind = validate_api_server_rules(text)?;
    let value = parse_yaml(text)?;
    let errors = match kind.as_str() {
        "Study" => parse_study(text).err().unwrap_or_default(),
        "ModelDeployment" => validate_deployment(&read_as::<ModelDeployment>(value)?),
        "Trial" => trial_name_errors(&read_as::<Trial>(value)?.name_any()),
        _ => Vec::new(),
    };
    if errors.is_empty() {
        Ok(kind)
    } else {
        Err(errors)
    }
}

/// Checks any Flywheel manifest with the API server's rules only (schema, then CEL): what
/// `kubectl apply` would accept. Returns the kind on success.
pub fn validate_api_server_rules(text: &str) -> Result<String, Vec<FieldError>> {
    let value = parse_yaml(text)?;
    let crd = crd_for(&value)?;
    check_against_crd(&crd, &value)?;
    Ok(crd.spec.names.kind)
}

/// The typed object of a manifest that already passed its CRD's schema.
fn read_as<K: kube::Resource<DynamicType = ()> + serde::de::DeserializeOwned>(
    value: Value,
) -> Result<K, Vec<FieldError>> {
    serde_json::from_value(value).map_err(|err| {
        vec![FieldError::new(
            "",
            format!("failed to read the {}: {err}", K::kind(&())),
        )]
    })
}

fn parse_yaml(text: &str) -> Result<Value, Vec<FieldError>> {
    if text.trim().is_empty() {
        return Err(vec![FieldError::new("", "the manifest is empty")]);
    }
    let value: Value = serde_saphyr::from_str(text)
        .map_err(|err| vec![FieldError::new("", format!("failed to parse YAML: {err}"))])?;
    if value.is_null() {
        return Err(vec![FieldError::new("", "the manifest is empty")]);
    }
    if !value.is_object() {
        return Err(vec![FieldError::new(
            "",
            "a manifest must be a mapping with apiVersion, kind, metadata and spec",
        )]);
    }
    Ok(value)
}

fn crd_for(value: &Value) -> Result<CustomResourceDefinition, Vec<FieldError>> {
    let api_version = value.get("apiVersion").and_then(Value::as_str);
    let kind = value.get("kind").and_then(Value::as_str);
    let mut errors = Vec::new();
    if api_version != Some(api::API_VERSION) {
        errors.push(FieldError::new(
            "apiVersion",
            format!(
                "expected {}, got {}",
                api::API_VERSION,
                api_version.map_or("nothing".to_string(), |v| format!("'{v}'"))
            ),
        ));
    }
    let crds = api::crds();
    let found = crds
        .iter()
        .find(|crd| Some(crd.spec.names.kind.as_str()) == kind);
    if found.is_none() {
        let kinds: Vec<&str> = crds
            .iter()
            .map(|crd| crd.spec.names.kind.as_str())
            .collect();
        errors.push(FieldError::new(
            "kind",
            format!(
                "expected one of {}, got {}",
                kinds.join(", "),
                kind.map_or("nothing".to_string(), |k| format!("'{k}'"))
            ),
        ));
    }
    match found {
        Some(crd) if errors.is_empty() => Ok(crd.clone()),
        _ => Err(errors),
    }
}

/// The API server's checks: structural schema, then `x-kubernetes-validations` CEL rules.
fn check_against_crd(crd: &CustomResourceDefinition, value: &Value) -> Result<(), Vec<FieldError>> {
    let Some(schema) = crd
        .spec
        .versions
        .iter()
        .find(|v| v.name == api::VERSION)
        .and_then(|v| v.schema.as_ref())
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .and_then(|s| serde_json::to_value(s).ok())
    else {
        return Err(vec![FieldError::new("", "the CRD has no schema")]);
    };
    let mut errors = Vec::new();
    check_metadata(value, &mut errors);
    // The API server checks apiVersion, kind and metadata itself; the CRD schema covers the rest.
    let mut body = value.clone();
    if let Some(object) = body.as_object_mut() {
        for field in ["apiVersion", "kind", "metadata", "status"] {
            object.remove(field);
        }
    }
    schema_check::check(&schema, &body, "", &mut errors);
    if errors.is_empty()
        && let Err(cel_errors) = kube_cel::Validator::new().validate(&schema, &body, None)
    {
        for error in cel_errors.into_vec() {
            errors.push(FieldError::new(
                error.field_path.clone(),
                error.message.clone(),
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn check_metadata(value: &Value, errors: &mut Vec<FieldError>) {
    match value.get("metadata") {
        Some(Value::Object(metadata)) => match metadata.get("name") {
            Some(Value::String(name)) if !name.is_empty() => {
                // The API server accepts any DNS-1123 subdomain as a custom resource's name.
                errors.extend(invalid_name(
                    "metadata.name",
                    name,
                    dns1123_subdomain_errors(name),
                ));
            }
            Some(Value::String(_)) | None => errors.push(FieldError::new(
                "metadata.name",
                "required field is missing; give the object a name",
            )),
            Some(other) => errors.push(FieldError::new(
                "metadata.name",
                format!("expected a string, got {other}"),
            )),
        },
        _ => errors.push(FieldError::new(
            "metadata",
            "required field is missing; add metadata.name",
        )),
    }
}
