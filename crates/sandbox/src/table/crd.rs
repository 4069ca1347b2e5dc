//! Custom resource tables from a CRD version's additionalPrinterColumns, evaluated as the apiextensions
//! server's table convertor does: the first JSONPath match per cell, typed by the column, `date` cells
//! turned into ages, missing values as null cells.

use serde_json::{Value, json};

use super::builtin::{name, name_col};
use super::{Column, IncludeObject, Row, human_duration, table};
use crate::schema::go_float;

/// One step of the JSONPath subset printer columns use.
#[derive(Clone, Debug, PartialEq)]
enum Step {
    Field(String),
    Index(i64),
    Wildcard,
}

/// Parses `.a.b`, `.a[0]`, `.a[-1]`, `.a[*].b`, `.a['x.y']` (optionally wrapped in `{}`).
fn parse(path: &str) -> Result<Vec<Step>, String> {
    let p = path.trim();
    let p = p.strip_prefix('{').and_then(|p| p.strip_suffix('}')).unwrap_or(p);
    let bytes: Vec<char> = p.chars().collect();
    let mut steps = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            '.' => {
                let start = i + 1;
                let mut end = start;
                while end < bytes.len() && bytes[end] != '.' && bytes[end] != '[' {
                    end += 1;
                }
                let field: String = bytes[start..end].iter().collect();
                match field.as_str() {
                    "" if end == bytes.len() && steps.is_empty() => {}
                    "" => return Err(format!("invalid JSONPath {path:?}: empty field name")),
                    "*" => steps.push(Step::Wildcard),
                    _ => steps.push(Step::Field(field)),
                }
                i = end;
            }
            '[' => {
                let close = bytes[i..].iter().position(|&c| c == ']').map(|o| i + o);
                let Some(close) = close else {
                    return Err(format!("invalid JSONPath {path:?}: unclosed ["));
                };
                let inner: String = bytes[i + 1..close].iter().collect();
                let inner = inner.trim();
                if inner == "*" {
                    steps.push(Step::Wildcard);
                } else if let Some(q) = inner
                    .strip_prefix('\'')
                    .and_then(|s| s.strip_suffix('\''))
                    .or_else(|| inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')))
                {
                    steps.push(Step::Field(q.to_owned()));
                } else {
                    let n = inner
                        .parse()
                        .map_err(|_| format!("invalid JSONPath {path:?}: unsupported [{inner}]"))?;
                    steps.push(Step::Index(n));
                }
                i = close + 1;
            }
            c => return Err(format!("invalid JSONPath {path:?}: unexpected {c:?}")),
        }
    }
    Ok(steps)
}

fn first<'a>(v: &'a Value, steps: &[Step]) -> Option<&'a Value> {
    let Some((step, rest)) = steps.split_first() else {
        return Some(v);
    };
    match (step, v) {
        (Step::Field(f), Value::Object(m)) => first(m.get(f)?, rest),
        (Step::Index(i), Value::Array(a)) => {
            let idx = if *i < 0 {
                a.len().checked_sub(i.unsigned_abs() as usize)?
            } else {
                *i as usize
            };
            first(a.get(idx)?, rest)
        }
        (Step::Wildcard, Value::Array(a)) => a.iter().find_map(|x| first(x, rest)),
        (Step::Wildcard, Value::Object(m)) => m.values().find_map(|x| first(x, rest)),
        _ => None,
    }
}

fn cell(type_: &str, v: Option<&Value>, now: jiff::Timestamp) -> Value {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Value::Null;
    };
    match (type_, v) {
        ("string", Value::String(s)) => json!(s),
        ("string", Value::Number(n)) if n.is_f64() => json!(go_float(n.as_f64().unwrap_or_default())),
        ("string", Value::Number(n)) => json!(n.to_string()),
        ("string", Value::Bool(b)) => json!(b.to_string()),
        ("string", other) => json!(other.to_string()),
        ("integer", Value::Number(n)) => n
            .as_i64()
            .map_or_else(|| json!(n.as_f64().unwrap_or_default() as i64), |i| json!(i)),
        ("number", Value::Number(n)) => json!(n.as_f64()),
        ("boolean", Value::Bool(b)) => json!(b),
        ("date", Value::String(s)) => match s.parse::<jiff::Timestamp>() {
            Ok(t) => json!(human_duration(now.as_nanosecond() - t.as_nanosecond())),
            Err(_) => json!("<invalid>"),
        },
        _ => Value::Null,
    }
}

fn column_of(entry: &Value) -> Column {
    let text = |k: &str| entry.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
    Column {
        name: text("name"),
        type_: text("type"),
        format: text("format"),
        description: text("description"),
        priority: entry.get("priority").and_then(Value::as_i64).unwrap_or(0) as i32,
        json_path: Some(text("jsonPath")),
    }
}

/// A custom resource's table from its CRD additionalPrinterColumns, NAME first. A CRD without columns gets
/// the server's default Age column. A column whose JSONPath does not parse yields null cells.
pub fn crd_table(columns: &[Value], objects: &[&Value], now: jiff::Timestamp, include_object: IncludeObject) -> Value {
    let mut extra: Vec<Column> = columns.iter().map(column_of).collect();
    if extra.is_empty() {
        extra.push(Column {
            name: "Age".into(),
            type_: "date".into(),
            format: String::new(),
            description: String::new(),
            priority: 0,
            json_path: Some(".metadata.creationTimestamp".into()),
        });
    }
    let paths: Vec<Option<Vec<Step>>> = extra
        .iter()
        .map(|c| c.json_path.as_deref().and_then(|p| parse(p).ok()))
        .collect();
    let rows = objects
        .iter()
        .map(|obj| {
            let mut cells = vec![name(obj)];
            for (c, steps) in extra.iter().zip(&paths) {
                cells.push(
                    steps
                        .as_ref()
                        .map_or(Value::Null, |s| cell(&c.type_, first(obj, s), now)),
                );
            }
            (Row::from(cells), *obj)
        })
        .collect();
    let mut all = vec![name_col()];
    all.extend(extra);
    table(&all, rows, include_object)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonpath_subset_parses_and_finds_the_first_match() {
        let obj = json!({"spec": {"a.b": 1, "list": [{"x": 1}, {"y": 2}, {"y": 3}]}});
        let find = |p: &str| first(&obj, &parse(p).expect("parses")).cloned();
        assert_eq!(find(".spec['a.b']"), Some(json!(1)));
        assert_eq!(find("{.spec.list[1].y}"), Some(json!(2)));
        assert_eq!(find(".spec.list[-1].y"), Some(json!(3)));
        assert_eq!(
            find(".spec.list[*].y"),
            Some(json!(2)),
            "the first match, as the server takes"
        );
        assert_eq!(find(".spec.list[7]"), None);
        assert_eq!(find(".spec.missing.deeper"), None);
        assert!(parse(".spec.list[?(@.x)]").is_err());
        assert!(parse("spec").is_err());
    }
}
