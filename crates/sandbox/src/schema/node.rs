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
        let ty = type_of(s, path, int_or_string || preserve_unknown)?;
        let properties = compile_properties(s, path)?;
        let additional = compile_additional(s, path, &properties)?;
        let items = compile_items(s, path, ty)?;
        let list_type = list_type_of(s, path)?;
        let pattern = pattern_of(s, path)?;
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
            required: strings(s, "required"),
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

/// The schema's `type`; None is allowed only for int-or-string and preserve-unknown-fields nodes (`untyped`).
fn type_of(s: &Value, path: &str, untyped: bool) -> Result<Option<Ty>, String> {
    match s.get("type").and_then(Value::as_str) {
        Some(t) if !t.is_empty() => Ok(Some(
            Ty::parse(t).ok_or_else(|| format!("{path}.type: Unsupported value: {t:?}"))?,
        )),
        _ if untyped => Ok(None),
        _ => Err(format!(
            "{path}.type: Required value: must not be empty for specified fields"
        )),
    }
}

fn compile_properties(s: &Value, path: &str) -> Result<BTreeMap<String, Node>, String> {
    let mut properties = BTreeMap::new();
    if let Some(props) = s.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            properties.insert(
                name.clone(),
                Node::compile(child, &format!("{path}.properties[{name}]"))?,
            );
        }
    }
    Ok(properties)
}

/// The schema of a map's values (`additionalProperties` as an object), which excludes named properties.
fn compile_additional(s: &Value, path: &str, properties: &BTreeMap<String, Node>) -> Result<Option<Box<Node>>, String> {
    match s.get("additionalProperties") {
        Some(child @ Value::Object(_)) => {
            if !properties.is_empty() {
                return Err(format!(
                    "{path}.additionalProperties: Forbidden: must not be used with properties"
                ));
            }
            Ok(Some(Box::new(Node::compile(
                child,
                &format!("{path}.additionalProperties"),
            )?)))
        }
        _ => Ok(None),
    }
}

/// The schema of an array's items, required for arrays.
fn compile_items(s: &Value, path: &str, ty: Option<Ty>) -> Result<Option<Box<Node>>, String> {
    match s.get("items") {
        Some(child) if !child.is_null() => Ok(Some(Box::new(Node::compile(child, &format!("{path}.items"))?))),
        _ if ty == Some(Ty::Array) => Err(format!("{path}.items: Required value: must be specified")),
        _ => Ok(None),
    }
}

/// `x-kubernetes-list-type`, with the keys a map list must name.
fn list_type_of(s: &Value, path: &str) -> Result<ListType, String> {
    Ok(match s.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("set") => ListType::Set,
        Some("map") => {
            let keys = strings(s, "x-kubernetes-list-map-keys");
            if keys.is_empty() {
                return Err(format!(
                    "{path}.x-kubernetes-list-map-keys: Required value: must not be empty if x-kubernetes-list-type is map"
                ));
            }
            ListType::Map(keys)
        }
        _ => ListType::Atomic,
    })
}

/// `pattern`, compiled.
fn pattern_of(s: &Value, path: &str) -> Result<Option<(String, Regex)>, String> {
    match s.get("pattern").and_then(Value::as_str) {
        Some(p) => {
            let re = Regex::new(p).map_err(|e| format!("{path}.pattern: Invalid value: {p:?}: {e}"))?;
            Ok(Some((p.to_owned(), re)))
        }
        None => Ok(None),
    }
}

/// The strings of the array at `key` (others skipped); empty when absent.
fn strings(s: &Value, key: &str) -> Vec<String> {
    s.get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|k| k.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
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
