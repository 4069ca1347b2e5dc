//! Decoding of the Kubernetes protobuf request bodies kubectl's typed clients send (`kubectl create namespace`,
//! `create token`, `drain`'s evictions, `auth can-i`, `create configmap|secret|serviceaccount`), into the
//! JSON the rest of the server works on.
//!
//! A body is the `k8s\0` magic and a `runtime.Unknown` envelope (type meta, raw object). The raw object is
//! read with a per-kind table of field numbers; kinds without a table are refused with 415, as a server that
//! does not speak protobuf for that kind.

use base64::Engine as _;
use serde_json::{Map, Value, json};

/// How one protobuf field maps to JSON.
#[derive(Clone, Copy)]
enum F {
    Str(&'static str),
    /// A scalar integer; `true` keeps a zero (optional pointer fields such as gracePeriodSeconds).
    Int(&'static str, bool),
    Bool(&'static str),
    Msg(&'static str, &'static [(u32, F)]),
    RepStr(&'static str),
    RepMsg(&'static str, &'static [(u32, F)]),
    MapStr(&'static str),
    MapBytes(&'static str),
}

const OWNER: &[(u32, F)] = &[
    (1, F::Str("kind")),
    (3, F::Str("name")),
    (4, F::Str("uid")),
    (5, F::Str("apiVersion")),
    (6, F::Bool("controller")),
    (7, F::Bool("blockOwnerDeletion")),
];
const META: &[(u32, F)] = &[
    (1, F::Str("name")),
    (2, F::Str("generateName")),
    (3, F::Str("namespace")),
    (5, F::Str("uid")),
    (6, F::Str("resourceVersion")),
    (11, F::MapStr("labels")),
    (12, F::MapStr("annotations")),
    (13, F::RepMsg("ownerReferences", OWNER)),
    (14, F::RepStr("finalizers")),
];
const PRECONDITIONS: &[(u32, F)] = &[(1, F::Str("uid")), (2, F::Str("resourceVersion"))];
const DELETE_OPTIONS: &[(u32, F)] = &[
    (1, F::Int("gracePeriodSeconds", true)),
    (2, F::Msg("preconditions", PRECONDITIONS)),
    (3, F::Bool("orphanDependents")),
    (4, F::Str("propagationPolicy")),
    (5, F::RepStr("dryRun")),
];
const NAMESPACE: &[(u32, F)] = &[
    (1, F::Msg("metadata", META)),
    (2, F::Msg("spec", &[(1, F::RepStr("finalizers"))])),
];
const CONFIG_MAP: &[(u32, F)] = &[
    (1, F::Msg("metadata", META)),
    (2, F::MapStr("data")),
    (3, F::MapBytes("binaryData")),
    (4, F::Bool("immutable")),
];
const SECRET: &[(u32, F)] = &[
    (1, F::Msg("metadata", META)),
    (2, F::MapBytes("data")),
    (3, F::Str("type")),
    (4, F::MapStr("stringData")),
    (5, F::Bool("immutable")),
];
const SERVICE_ACCOUNT: &[(u32, F)] = &[(1, F::Msg("metadata", META))];
const EVICTION: &[(u32, F)] = &[
    (1, F::Msg("metadata", META)),
    (2, F::Msg("deleteOptions", DELETE_OPTIONS)),
];
const BOUND_REF: &[(u32, F)] = &[
    (1, F::Str("kind")),
    (2, F::Str("apiVersion")),
    (3, F::Str("name")),
    (4, F::Str("uid")),
];
const TOKEN_REQUEST: &[(u32, F)] = &[
    (1, F::Msg("metadata", META)),
    (
        2,
        F::Msg(
            "spec",
            &[
                (1, F::RepStr("audiences")),
                (3, F::Msg("boundObjectRef", BOUND_REF)),
                (4, F::Int("expirationSeconds", true)),
            ],
        ),
    ),
];
const RESOURCE_ATTRIBUTES: &[(u32, F)] = &[
    (1, F::Str("namespace")),
    (2, F::Str("verb")),
    (3, F::Str("group")),
    (4, F::Str("version")),
    (5, F::Str("resource")),
    (6, F::Str("subresource")),
    (7, F::Str("name")),
];
const NON_RESOURCE_ATTRIBUTES: &[(u32, F)] = &[(1, F::Str("path")), (2, F::Str("verb"))];
const SSAR: &[(u32, F)] = &[
    (1, F::Msg("metadata", META)),
    (
        2,
        F::Msg(
            "spec",
            &[
                (1, F::Msg("resourceAttributes", RESOURCE_ATTRIBUTES)),
                (2, F::Msg("nonResourceAttributes", NON_RESOURCE_ATTRIBUTES)),
            ],
        ),
    ),
];
const SAR: &[(u32, F)] = &[
    (1, F::Msg("metadata", META)),
    (
        2,
        F::Msg(
            "spec",
            &[
                (1, F::Msg("resourceAttributes", RESOURCE_ATTRIBUTES)),
                (2, F::Msg("nonResourceAttributes", NON_RESOURCE_ATTRIBUTES)),
                (3, F::Str("user")),
                (4, F::RepStr("groups")),
                (6, F::Str("uid")),
            ],
        ),
    ),
];
const POLICY_RULE: &[(u32, F)] = &[
    (1, F::RepStr("verbs")),
    (2, F::RepStr("apiGroups")),
    (3, F::RepStr("resources")),
    (4, F::RepStr("resourceNames")),
    (5, F::RepStr("nonResourceURLs")),
];
const ROLE: &[(u32, F)] = &[(1, F::Msg("metadata", META)), (2, F::RepMsg("rules", POLICY_RULE))];
const SUBJECT: &[(u32, F)] = &[
    (1, F::Str("kind")),
    (2, F::Str("apiGroup")),
    (3, F::Str("name")),
    (4, F::Str("namespace")),
];
const ROLE_REF: &[(u32, F)] = &[(1, F::Str("apiGroup")), (2, F::Str("kind")), (3, F::Str("name"))];
const ROLE_BINDING: &[(u32, F)] = &[
    (1, F::Msg("metadata", META)),
    (2, F::RepMsg("subjects", SUBJECT)),
    (3, F::Msg("roleRef", ROLE_REF)),
];
const OBJECT_META_ONLY: &[(u32, F)] = &[(1, F::Msg("metadata", META))];

fn schema(kind: &str) -> Option<&'static [(u32, F)]> {
    Some(match kind {
        "Namespace" => NAMESPACE,
        "ConfigMap" => CONFIG_MAP,
        "Secret" => SECRET,
        "ServiceAccount" => SERVICE_ACCOUNT,
        "Eviction" => EVICTION,
        "DeleteOptions" => DELETE_OPTIONS,
        "TokenRequest" => TOKEN_REQUEST,
        "SelfSubjectAccessReview" => SSAR,
        "SubjectAccessReview" => SAR,
        "SelfSubjectReview" => OBJECT_META_ONLY,
        "Role" | "ClusterRole" => ROLE,
        "RoleBinding" | "ClusterRoleBinding" => ROLE_BINDING,
        _ => return None,
    })
}

/// One field of the wire format: number and value (varint, or bytes of a length-delimited field).
enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *buf.get(*pos).ok_or("truncated varint")?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("varint too long".into())
}

fn fields(buf: &[u8]) -> Result<Vec<(u32, Wire<'_>)>, String> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let key = varint(buf, &mut pos)?;
        let number = u32::try_from(key >> 3).map_err(|_| "field number out of range")?;
        match key & 7 {
            0 => out.push((number, Wire::Varint(varint(buf, &mut pos)?))),
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).map_err(|_| "length out of range")?;
                let end = pos
                    .checked_add(len)
                    .filter(|e| *e <= buf.len())
                    .ok_or("truncated field")?;
                out.push((number, Wire::Bytes(&buf[pos..end])));
                pos = end;
            }
            1 => pos += 8,
            5 => pos += 4,
            t => return Err(format!("unsupported wire type {t}")),
        }
    }
    Ok(out)
}

fn text(bytes: &[u8]) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| "invalid UTF-8 in a string field".to_string())
}

fn map_entry(bytes: &[u8], as_base64: bool) -> Result<(String, Value), String> {
    let (mut key, mut value) = (String::new(), Value::String(String::new()));
    for (n, w) in fields(bytes)? {
        if let Wire::Bytes(b) = w {
            match n {
                1 => key = text(b)?,
                2 if as_base64 => value = json!(base64::engine::general_purpose::STANDARD.encode(b)),
                2 => value = json!(text(b)?),
                _ => {}
            }
        }
    }
    Ok((key, value))
}

fn decode(buf: &[u8], schema: &[(u32, F)]) -> Result<Value, String> {
    let mut obj = Map::new();
    for (n, w) in fields(buf)? {
        let Some((_, f)) = schema.iter().find(|(num, _)| *num == n) else {
            continue;
        };
        match (*f, w) {
            (F::Str(name), Wire::Bytes(b)) => {
                let s = text(b)?;
                if !s.is_empty() {
                    obj.insert(name.into(), json!(s));
                }
            }
            (F::Int(name, keep_zero), Wire::Varint(v)) => {
                if v != 0 || keep_zero {
                    obj.insert(name.into(), json!(v as i64));
                }
            }
            (F::Bool(name), Wire::Varint(v)) => {
                obj.insert(name.into(), json!(v != 0));
            }
            (F::Msg(name, inner), Wire::Bytes(b)) => {
                obj.insert(name.into(), decode(b, inner)?);
            }
            (F::RepStr(name), Wire::Bytes(b)) => {
                let list = obj.entry(name).or_insert_with(|| json!([]));
                if let Some(a) = list.as_array_mut() {
                    a.push(json!(text(b)?));
                }
            }
            (F::RepMsg(name, inner), Wire::Bytes(b)) => {
                let item = decode(b, inner)?;
                let list = obj.entry(name).or_insert_with(|| json!([]));
                if let Some(a) = list.as_array_mut() {
                    a.push(item);
                }
            }
            (F::MapStr(name) | F::MapBytes(name), Wire::Bytes(b)) => {
                let (k, v) = map_entry(b, matches!(f, F::MapBytes(_)))?;
                let map = obj.entry(name).or_insert_with(|| json!({}));
                map[k] = v;
            }
            _ => return Err(format!("field {n} has an unexpected wire type")),
        }
    }
    Ok(Value::Object(obj))
}

/// Decodes a protobuf request body into JSON; Err says why (the caller answers 415 or 400).
pub(crate) fn to_json(body: &[u8]) -> Result<Value, String> {
    let envelope = body
        .strip_prefix(b"k8s\0")
        .ok_or("the body lacks the protobuf magic number")?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for (n, w) in fields(envelope)? {
        match (n, w) {
            (1, Wire::Bytes(type_meta)) => {
                for (tn, tw) in fields(type_meta)? {
                    match (tn, tw) {
                        (1, Wire::Bytes(b)) => api_version = text(b)?,
                        (2, Wire::Bytes(b)) => kind = text(b)?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(b)) => raw = b,
            _ => {}
        }
    }
    let schema =
        schema(&kind).ok_or_else(|| format!("protobuf bodies of kind {kind:?} are not supported; send JSON"))?;
    let mut obj = decode(raw, schema)?;
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_kubectl_create_namespace() {
        // The body `kubectl create namespace tenant-acme` sends.
        let body: &[u8] = &[
            0x6b, 0x38, 0x73, 0x00, 0x0a, 0x0f, 0x0a, 0x02, 0x76, 0x31, 0x12, 0x09, b'N', b'a', b'm', b'e', b's', b'p',
            b'a', b'c', b'e', 0x12, 0x23, 0x0a, 0x1b, 0x0a, 0x0b, b't', b'e', b'n', b'a', b'n', b't', b'-', b'a', b'c',
            b'm', b'e', 0x12, 0x00, 0x1a, 0x00, 0x22, 0x00, 0x2a, 0x00, 0x32, 0x00, 0x38, 0x00, 0x42, 0x00, 0x12, 0x00,
            0x1a, 0x02, 0x0a, 0x00, 0x1a, 0x00, 0x22, 0x00,
        ];
        let obj = to_json(body).unwrap();
        assert_eq!(
            obj,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "tenant-acme"}, "spec": {}})
        );
        assert!(to_json(b"k8s\0\x0a\x05\x12\x03Pod").unwrap_err().contains("Pod"));
        assert!(to_json(b"{}").is_err());
        assert!(to_json(b"k8s\0\x0a\xff").is_err());
    }
}
