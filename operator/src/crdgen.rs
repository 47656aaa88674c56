//! `flywheel crdgen`: the CRDs as one multi-document YAML stream. `crds/flywheel.yaml` holds
//! exactly this output and a test fails when they drift apart.

use crate::Error;

/// Every Flywheel CRD as YAML documents separated by `---`.
pub fn render() -> Result<String, Error> {
    let mut out = String::new();
    for crd in flywheel_core::api::crds() {
        let yaml = serde_saphyr::to_string(&crd).map_err(|err| Error::Serialize {
            what: "CustomResourceDefinition",
            message: err.to_string(),
        })?;
        out.push_str("---\n");
        out.push_str(&yaml);
        if !yaml.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}
