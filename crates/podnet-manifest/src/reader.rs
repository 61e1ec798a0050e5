//! A strict reader over a JSON value: every field is either read, ignored
//! on purpose (and reported), or refused with its path named.

use std::collections::BTreeMap;

use podnet_policy::FieldError;
use serde_json::{Map, Value};

/// What reading one object found: refused fields and fields ignored on purpose.
#[derive(Debug, Default)]
pub struct Findings {
    /// Refused fields.
    pub errors: Vec<FieldError>,
    /// Paths of fields accepted but ignored.
    pub ignored: Vec<String>,
}

impl Findings {
    /// Records a refused field.
    pub fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError::new(path, message));
    }
}

/// One JSON object being read: fields not taken by the end are refused.
pub struct Obj<'a> {
    path: String,
    map: Option<&'a Map<String, Value>>,
    taken: Vec<&'a str>,
}

/// `a.b` (or `b` at the top).
pub fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

impl<'a> Obj<'a> {
    /// Reads `value` at `path` (an absent value reads as an empty object).
    pub fn new(path: &str, value: Option<&'a Value>, f: &mut Findings) -> Self {
        let map = match value {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m),
            Some(other) => {
                f.error(path, format!("must be an object, not {}", kind_of(other)));
                None
            }
        };
        Obj {
            path: path.to_string(),
            map,
            taken: Vec::new(),
        }
    }

    /// The path of a field of this object.
    pub fn at(&self, field: &str) -> String {
        join(&self.path, field)
    }

    /// Takes a field (absent and `null` are `None`).
    pub fn take(&mut self, field: &'a str) -> Option<&'a Value> {
        self.taken.push(field);
        self.map?.get(field).filter(|v| !v.is_null())
    }

    /// Takes fields podnet accepts and ignores; each present one is reported.
    pub fn ignore(&mut self, fields: &[&'a str], f: &mut Findings) {
        for field in fields {
            if self.take(field).is_some() {
                f.ignored.push(self.at(field));
            }
        }
    }

    /// A string field.
    pub fn string(&mut self, field: &'a str, f: &mut Findings) -> Option<String> {
        let path = self.at(field);
        match self.take(field)? {
            Value::String(s) => Some(s.clone()),
            other => {
                f.error(path, format!("must be a string, not {}", kind_of(other)));
                None
            }
        }
    }

    /// A string field that must be one of `options` (`default` when absent).
    pub fn choice<T: Copy>(
        &mut self,
        field: &'a str,
        options: &[(&str, T)],
        default: T,
        f: &mut Findings,
    ) -> T {
        let Some(text) = self.string(field, f) else {
            return default;
        };
        if let Some((_, v)) = options.iter().find(|(name, _)| *name == text) {
            return *v;
        }
        let names: Vec<String> = options.iter().map(|(n, _)| format!("{n:?}")).collect();
        f.error(
            self.at(field),
            format!("unsupported value {text:?}: {}", names.join(", ")),
        );
        default
    }

    /// A non-negative integer field (read wide, so range errors name the value).
    pub fn number(&mut self, field: &'a str, f: &mut Findings) -> Option<u32> {
        let path = self.at(field);
        let v = self.take(field)?;
        match v.as_u64() {
            Some(n) => Some(u32::try_from(n).unwrap_or(u32::MAX)),
            None => {
                f.error(path, format!("must be a non-negative integer, not {v}"));
                None
            }
        }
    }

    /// A list field, each item with its path.
    pub fn list(&mut self, field: &'a str, f: &mut Findings) -> Vec<(String, &'a Value)> {
        let path = self.at(field);
        match self.take(field) {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("{path}[{i}]"), v))
                .collect(),
            Some(other) => {
                f.error(path, format!("must be a list, not {}", kind_of(other)));
                Vec::new()
            }
        }
    }

    /// A list of strings.
    pub fn strings(&mut self, field: &'a str, f: &mut Findings) -> Vec<String> {
        self.list(field, f)
            .into_iter()
            .filter_map(|(path, v)| match v {
                Value::String(s) => Some(s.clone()),
                other => {
                    f.error(path, format!("must be a string, not {}", kind_of(other)));
                    None
                }
            })
            .collect()
    }

    /// A map of strings to strings (labels, selectors).
    pub fn string_map(&mut self, field: &'a str, f: &mut Findings) -> BTreeMap<String, String> {
        let path = self.at(field);
        match self.take(field) {
            None => BTreeMap::new(),
            Some(Value::Object(m)) => m
                .iter()
                .filter_map(|(k, v)| match v {
                    Value::String(s) => Some((k.clone(), s.clone())),
                    other => {
                        f.error(
                            format!("{path}[{k}]"),
                            format!("must be a string, not {}", kind_of(other)),
                        );
                        None
                    }
                })
                .collect(),
            Some(other) => {
                f.error(
                    path,
                    format!("must be a map of strings, not {}", kind_of(other)),
                );
                BTreeMap::new()
            }
        }
    }

    /// Whether the field is present (without taking it).
    pub fn has(&self, field: &str) -> bool {
        self.map
            .is_some_and(|m| m.get(field).is_some_and(|v| !v.is_null()))
    }

    /// Refuses every field not taken.
    pub fn finish(self, f: &mut Findings) {
        let Some(map) = self.map else {
            return;
        };
        for key in map.keys() {
            if !self.taken.contains(&key.as_str()) {
                f.error(join(&self.path, key), "field not supported by podnet");
            }
        }
    }
}

/// `a string`, `a number`, ...: for messages.
pub fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
