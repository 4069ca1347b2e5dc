//! Files of the sublet repository that unit tests read: sublet's generated CRDs (`crds/`, which a sublet test
//! keeps equal to its API types) and the examples. The sandbox does not import the operator.

use serde_json::Value;

/// A path relative to the repository root.
pub(crate) fn path(relative: &str) -> String {
    format!("{}/../../{relative}", env!("CARGO_MANIFEST_DIR"))
}

/// A YAML file of the repository, as JSON.
pub(crate) fn yaml(relative: &str) -> Value {
    let path = path(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{path} is not YAML: {e}"))
}

/// The CustomResourceDefinition of one of sublet's kinds, from `crds/`.
pub(crate) fn sublet_crd(kind: &str) -> Value {
    let file = match kind {
        "TenantPool" => "crds/tenantpools.sublet.dev.yaml",
        "GpuLease" => "crds/gpuleases.sublet.dev.yaml",
        other => panic!("sublet serves no kind {other}"),
    };
    let crd = yaml(file);
    assert_eq!(crd["spec"]["names"]["kind"], kind, "{file} defines {kind}");
    crd
}

/// The openAPIV3Schema of one of sublet's kinds.
pub(crate) fn sublet_schema(kind: &str) -> Value {
    sublet_crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}
