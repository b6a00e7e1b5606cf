//! Reading a command's `args` map as the Python worker does: missing keys take
//! defaults, `None` is the same as missing, numbers may be ints or floats, strings
//! may arrive as msgpack `str` or `bin`.

use rmpv::Value;

use crate::protocol::{map_get, value_str};

/// A command's arguments.
pub struct Args<'a>(pub &'a Value);

impl<'a> Args<'a> {
    /// The value of `key` unless missing or nil.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        map_get(self.0, key).filter(|v| !v.is_nil())
    }

    /// A required string.
    pub fn str(&self, key: &str) -> Result<&'a str, String> {
        match self.get(key) {
            None => Err(format!("missing argument {key:?}")),
            Some(v) => value_str(v).ok_or_else(|| format!("argument {key:?} must be a string")),
        }
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&'a str>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => value_str(v)
                .map(Some)
                .ok_or_else(|| format!("argument {key:?} must be a string")),
        }
    }

    /// A boolean (ints count, as Python's truthiness), `default` when missing.
    pub fn bool(&self, key: &str, default: bool) -> bool {
        match self.get(key) {
            None => default,
            Some(Value::Boolean(b)) => *b,
            Some(v) => v.as_i64().map(|i| i != 0).unwrap_or(default),
        }
    }

    /// A number of seconds or a count.
    pub fn num(&self, key: &str) -> Result<Option<f64>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .or_else(|| v.as_i64().map(|i| i as f64))
                .or_else(|| v.as_u64().map(|i| i as f64))
                .map(Some)
                .ok_or_else(|| format!("argument {key:?} must be a number")),
        }
    }

    /// A string, or a list of strings (`dir` may be either).
    pub fn str_list(&self, key: &str) -> Result<Option<Vec<String>>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    value_str(v)
                        .map(str::to_string)
                        .ok_or_else(|| format!("argument {key:?} must be a list of strings"))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(v) => value_str(v)
                .map(|s| Some(vec![s.to_string()]))
                .ok_or_else(|| format!("argument {key:?} must be a list of strings")),
        }
    }
}

/// A string for messages: `str`/`bin` as text, anything else as msgpack prints it.
pub fn display(v: &Value) -> String {
    value_str(v)
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string())
}
