//! The compiled form of one node of a structural schema: its type, value validations and CEL rules.
//!
//! `Node::compile` reads the openAPIV3Schema JSON once; the defaulting, pruning, structural checks and CEL
//! evaluation then walk `Node`s, never the JSON.

use std::collections::BTreeMap;

use kube::core::cel::cel::Program;
use regex::Regex;
use serde_json::Value;

/// The `type` of a schema node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ty {
    Object,
    Array,
    String,
    Integer,
    Number,
    Boolean,
}

impl Ty {
    fn parse(s: &str) -> Option<Ty> {
        Some(match s {
            "object" => Ty::Object,
            "array" => Ty::Array,
            "string" => Ty::String,
            "integer" => Ty::Integer,
            "number" => Ty::Number,
            "boolean" => Ty::Boolean,
            _ => return None,
        })
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Ty::Object => "object",
            Ty::Array => "array",
            Ty::String => "string",
            Ty::Integer => "integer",
            Ty::Number => "number",
            Ty::Boolean => "boolean",
        }
    }
}

/// One `x-kubernetes-validations` entry, compiled.
pub(crate) struct Rule {
    pub rule: String,
    pub program: Program,
    pub message: Option<String>,
    pub message_expression: Option<Program>,
    pub reason: Option<String>,
    pub field_path: Option<String>,
    /// The rule reads `oldSelf`: it runs on update only, and only where the old value exists.
    pub transition: bool,
    pub optional_old_self: bool,
}

/// How a list's items are identified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ListType {
    Atomic,
    Set,
    Map(Vec<String>),
}

pub(crate) struct Node {
    /// None for `x-kubernetes-int-or-string` and untyped `x-kubernetes-preserve-unknown-fields` nodes.
    pub ty: Option<Ty>,
    pub int_or_string: bool,
    pub nullable: bool,
    pub preserve_unknown: bool,
    pub embedded: bool,
    pub format: Option<String>,
    pub enum_values: Option<Vec<Value>>,
    pub minimum: Option<f64>,
    pub exclusive_minimum: bool,
    pub maximum: Option<f64>,
    pub exclusive_maximum: bool,
    pub pattern: Option<(String, Regex)>,
    pub min_length: Option<u64>,
    pub max_length: Option<u64>,
    pub min_items: Option<u64>,
    pub max_items: Option<u64>,
    pub min_properties: Option<u64>,
    pub max_properties: Option<u64>,
    pub required: Vec<String>,
    pub default: Option<Value>,
    pub properties: BTreeMap<String, Node>,
    pub items: Option<Box<Node>>,
    /// The schema of every value of a map (`additionalProperties`).
    pub additional: Option<Box<Node>>,
    pub list_type: ListType,
    pub rules: Vec<Rule>,
}

fn u64_of(s: &Value, key: &str, path: &str) -> Result<Option<u64>, String> {
    match s.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| format!("{path}.{key}: must be a non-negative integer")),
    }
}

fn f64_of(s: &Value, key: &str, path: &str) -> Result<Option<f64>, String> {
    match s.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| format!("{path}.{key}: must be a number")),
    }
}

fn flag(s: &Value, key: &str) -> bool {
    s.get(key).and_then(Value::as_bool).unwrap_or(false)
}

impl Node {
    /// Compiles the schema at `path` (for error messages, e.g. "openAPIV3Schema.properties[spec]").
    pub(crate) fn compile(s: &Value, path: &str) -> Result<Node, String> {
        if !s.is_object() {
            return Err(format!("{path}: must be an object"));
        }
        let int_or_string = flag(s, "x-kubernetes-int-or-string");
        let preserve_unknown = flag(s, "x-kubernetes-preserve-unknown-fields");
        let ty = match s.get("type").and_then(Value::as_str) {
            Some(t) if !t.is_empty() => {
                Some(Ty::parse(t).ok_or_else(|| format!("{path}.type: Unsupported value: {t:?}"))?)
            }
            _ if int_or_string || preserve_unknown => None,
            _ => {
                return Err(format!(
                    "{path}.type: Required value: must not be empty for specified fields"
                ));
            }
        };
        let mut properties = BTreeMap::new();
        if let Some(props) = s.get("properties").and_then(Value::as_object) {
            for (name, child) in props {
                properties.insert(
                    name.clone(),
                    Node::compile(child, &format!("{path}.properties[{name}]"))?,
                );
            }
        }
        let additional = match s.get("additionalProperties") {
            Some(child @ Value::Object(_)) => {
                if !properties.is_empty() {
                    return Err(format!(
                        "{path}.additionalProperties: Forbidden: must not be used with properties"
                    ));
                }
                Some(Box::new(Node::compile(child, &format!("{path}.additionalProperties"))?))
            }
            _ => None,
        };
        let items = match s.get("items") {
            Some(child) if !child.is_null() => Some(Box::new(Node::compile(child, &format!("{path}.items"))?)),
            _ if ty == Some(Ty::Array) => {
                return Err(format!("{path}.items: Required value: must be specified"));
            }
            _ => None,
        };
        let list_type = match s.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("set") => ListType::Set,
            Some("map") => {
                let keys: Vec<String> = s
                    .get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(|k| k.as_str().map(str::to_owned)).collect())
                    .unwrap_or_default();
                if keys.is_empty() {
                    return Err(format!(
                        "{path}.x-kubernetes-list-map-keys: Required value: must not be empty if x-kubernetes-list-type is map"
                    ));
                }
                ListType::Map(keys)
            }
            _ => ListType::Atomic,
        };
        let pattern = match s.get("pattern").and_then(Value::as_str) {
            Some(p) => {
                let re = Regex::new(p).map_err(|e| format!("{path}.pattern: Invalid value: {p:?}: {e}"))?;
                Some((p.to_owned(), re))
            }
            None => None,
        };
        let required = s
            .get("required")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|k| k.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        Ok(Node {
            ty,
            int_or_string,
            nullable: flag(s, "nullable"),
            preserve_unknown: preserve_unknown || matches!(s.get("additionalProperties"), Some(Value::Bool(true))),
            embedded: flag(s, "x-kubernetes-embedded-resource"),
            format: s.get("format").and_then(Value::as_str).map(str::to_owned),
            enum_values: s.get("enum").and_then(Value::as_array).cloned(),
            minimum: f64_of(s, "minimum", path)?,
            exclusive_minimum: flag(s, "exclusiveMinimum"),
            maximum: f64_of(s, "maximum", path)?,
            exclusive_maximum: flag(s, "exclusiveMaximum"),
            pattern,
            min_length: u64_of(s, "minLength", path)?,
            max_length: u64_of(s, "maxLength", path)?,
            min_items: u64_of(s, "minItems", path)?,
            max_items: u64_of(s, "maxItems", path)?,
            min_properties: u64_of(s, "minProperties", path)?,
            max_properties: u64_of(s, "maxProperties", path)?,
            required,
            default: s.get("default").cloned(),
            properties,
            items,
            additional,
            list_type,
            rules: compile_rules(s, path)?,
        })
    }

    /// The schema of the child `key` of an object value, if the schema knows it.
    pub(crate) fn child(&self, key: &str) -> Option<&Node> {
        self.properties.get(key).or(self.additional.as_deref())
    }

    /// The type name the server reports as the value of a CEL rule failure (`Invalid value: "integer"`).
    pub(crate) fn type_name(&self) -> &'static str {
        self.ty.map(Ty::name).unwrap_or("")
    }
}

fn compile_rules(s: &Value, path: &str) -> Result<Vec<Rule>, String> {
    let Some(list) = s.get("x-kubernetes-validations") else {
        return Ok(Vec::new());
    };
    let list = list
        .as_array()
        .ok_or_else(|| format!("{path}.x-kubernetes-validations: must be a list"))?;
    let mut rules = Vec::with_capacity(list.len());
    for (i, entry) in list.iter().enumerate() {
        let at = format!("{path}.x-kubernetes-validations[{i}]");
        let rule = entry
            .get("rule")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{at}.rule: Required value"))?
            .to_owned();
        let program = Program::compile(&rule)
            .map_err(|e| format!("{at}.rule: Invalid value: {rule:?}: compilation failed: {e}"))?;
        let message_expression = match entry.get("messageExpression").and_then(Value::as_str) {
            Some(expr) => Some(Program::compile(expr).map_err(|e| {
                format!("{at}.messageExpression: Invalid value: {expr:?}: messageExpression compilation failed: {e}")
            })?),
            None => None,
        };
        let transition = program.references().has_variable("oldSelf");
        let text = |key: &str| entry.get(key).and_then(Value::as_str).map(str::to_owned);
        rules.push(Rule {
            message: text("message"),
            reason: text("reason"),
            field_path: text("fieldPath"),
            optional_old_self: flag(entry, "optionalOldSelf"),
            rule,
            program,
            message_expression,
            transition,
        });
    }
    Ok(rules)
}
