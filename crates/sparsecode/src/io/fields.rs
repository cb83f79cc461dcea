//! Typed reads of a JSON config's fields (SAELens and sparsify `cfg.json`, store metadata): a field
//! that is absent gives `None` (the caller decides the default), a field that is present with the
//! wrong type or value is an error naming the file, the field and what was found. Nothing falls
//! back silently to another key or a default.

use crate::{Error, Result};
use serde_json::Value;
use std::path::Path;

/// The fields of one JSON document read from `path`.
#[derive(Clone, Copy, Debug)]
pub struct Fields<'a> {
    value: &'a Value,
    path: &'a Path,
}

impl<'a> Fields<'a> {
    /// Reads fields of `value`, which came from `path` (named in errors).
    pub fn new(value: &'a Value, path: &'a Path) -> Self {
        Fields { value, path }
    }

    /// The file the fields came from.
    pub fn path(&self) -> &'a Path {
        self.path
    }

    /// The raw field: `key` is a top-level name, or a JSON pointer (`/a/b`) into nested objects.
    fn get(&self, key: &str) -> Option<&'a Value> {
        if key.starts_with('/') {
            self.value.pointer(key)
        } else {
            self.value.get(key)
        }
    }

    fn wrong(&self, key: &str, expected: &str, found: &Value) -> Error {
        let name = key.trim_start_matches('/').replace('/', ".");
        Error::format(
            self.path,
            format!("field '{name}' must be {expected}, found {found}"),
        )
    }

    fn missing(&self, key: &str, expected: &str) -> Error {
        let name = key.trim_start_matches('/').replace('/', ".");
        Error::format(self.path, format!("field '{name}' ({expected}) is missing"))
    }

    /// A positive integer that fits in memory sizes, if present.
    pub fn positive_usize(&self, key: &str) -> Result<Option<usize>> {
        let expected = "a positive integer";
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_u64().map(usize::try_from) {
                Some(Ok(n)) if n > 0 => Ok(Some(n)),
                _ => Err(self.wrong(key, expected, v)),
            },
        }
    }

    /// A positive integer that must be present.
    pub fn required_usize(&self, key: &str) -> Result<usize> {
        self.positive_usize(key)?
            .ok_or_else(|| self.missing(key, "a positive integer"))
    }

    /// A string, if present.
    pub fn str(&self, key: &str) -> Result<Option<&'a str>> {
        self.get(key)
            .map(|v| v.as_str().ok_or_else(|| self.wrong(key, "a string", v)))
            .transpose()
    }

    /// A boolean (`true` or `false`, not a string), if present.
    pub fn bool(&self, key: &str) -> Result<Option<bool>> {
        self.get(key)
            .map(|v| {
                v.as_bool()
                    .ok_or_else(|| self.wrong(key, "true or false", v))
            })
            .transpose()
    }

    /// A finite number, if present.
    pub fn f64(&self, key: &str) -> Result<Option<f64>> {
        self.get(key)
            .map(|v| match v.as_f64() {
                Some(x) if x.is_finite() => Ok(x),
                _ => Err(self.wrong(key, "a finite number", v)),
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn present_and_wrong_is_an_error_naming_the_field() {
        let v = json!({"k": "7", "n": -1, "z": 0, "b": "false", "s": 5, "ok": 3,
            "kw": {"k": 2.5}, "x": null});
        let f = Fields::new(&v, Path::new("cfg.json"));
        let e = |r: Result<Option<usize>>| r.unwrap_err().to_string();
        assert!(
            e(f.positive_usize("k")).contains("field 'k' must be a positive integer, found \"7\"")
        );
        assert!(e(f.positive_usize("n")).contains("found -1"));
        assert!(e(f.positive_usize("z")).contains("found 0"));
        assert!(e(f.positive_usize("/kw/k")).contains("field 'kw.k'"));
        assert!(e(f.positive_usize("x")).contains("found null"));
        let b = f.bool("b").unwrap_err().to_string();
        assert!(
            b.contains("cfg.json") && b.contains("'b' must be true or false"),
            "{b}"
        );
        assert!(f.str("s").is_err() && f.str("x").is_err());
        assert_eq!(f.positive_usize("ok").unwrap(), Some(3));
        assert_eq!(f.positive_usize("absent").unwrap(), None);
        assert!(f
            .required_usize("absent")
            .unwrap_err()
            .to_string()
            .contains("'absent' (a positive integer) is missing"));
    }
}
