//! Text and metadata that both databases can store, checked the same way at the edge and
//! in the worker (SPEC: both databases accept and refuse the same inputs).
//!
//! PostgreSQL refuses NUL in `text` and `jsonb` while SQLite stores it, so a NUL accepted at
//! the edge would be a poison pill on one database only. The other C0/C1 control characters
//! are refused with it: no message needs them, and they corrupt logs and terminals. Tab,
//! line feed and carriage return stay allowed (bodies are multi-line).

use serde_json::Value;

use super::error::FieldError;

/// Largest `metadata` object, as compact JSON.
pub const MAX_METADATA_BYTES: usize = 8 * 1024;
/// Deepest nesting of objects/arrays in `metadata`; the object itself is level 1.
pub const MAX_METADATA_DEPTH: usize = 5;
/// Most keys in `metadata`, nested objects included.
pub const MAX_METADATA_KEYS: usize = 100;

const CONTROL: &str =
    "must not contain control characters (tab, line feed and carriage return are allowed)";

/// Refuses NUL and the other control characters except `\t`, `\n`, `\r`.
pub fn check_text(s: &str) -> Result<(), String> {
    if s.chars().any(is_forbidden) {
        Err(CONTROL.into())
    } else {
        Ok(())
    }
}

fn is_forbidden(c: char) -> bool {
    c.is_control() && !matches!(c, '\t' | '\n' | '\r')
}

/// `metadata`: a JSON object within the bounds above, with no control character in any key
/// or string value at any depth. The error names the offending place, e.g.
/// `metadata.tags[2]`.
pub fn check_metadata(m: &Value) -> Result<(), FieldError> {
    let Value::Object(_) = m else {
        return Err(FieldError::new("metadata", "must be a JSON object"));
    };
    let mut keys = 0;
    walk(m, "metadata", 1, &mut keys)?;
    if keys > MAX_METADATA_KEYS {
        return Err(FieldError::new(
            "metadata",
            format!("must have at most {MAX_METADATA_KEYS} keys (nested objects included)"),
        ));
    }
    // Compact JSON, as it is stored; the walk above already bounded the work.
    let size = serde_json::to_vec(m).map(|v| v.len()).unwrap_or(usize::MAX);
    if size > MAX_METADATA_BYTES {
        return Err(FieldError::new(
            "metadata",
            format!("must be at most {MAX_METADATA_BYTES} bytes as JSON"),
        ));
    }
    Ok(())
}

fn walk(value: &Value, path: &str, depth: usize, keys: &mut usize) -> Result<(), FieldError> {
    let nested = matches!(value, Value::Array(_) | Value::Object(_));
    if nested && depth > MAX_METADATA_DEPTH {
        return Err(FieldError::new(
            path,
            format!("nests deeper than {MAX_METADATA_DEPTH} levels"),
        ));
    }
    match value {
        Value::String(s) => check_text(s).map_err(|m| FieldError::new(path, m)),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, item)| walk(item, &format!("{path}[{i}]"), depth + 1, keys)),
        Value::Object(map) => {
            for (key, item) in map {
                *keys += 1;
                if *keys > MAX_METADATA_KEYS {
                    // No need to walk the rest of a huge object: the caller reports the count.
                    return Ok(());
                }
                if check_text(key).is_err() {
                    return Err(FieldError::new(
                        path,
                        "has a key with control characters (tab, line feed and carriage return are allowed)",
                    ));
                }
                walk(item, &format!("{path}.{key}"), depth + 1, keys)?;
            }
            Ok(())
        }
        // The JSON parser rounds a literal just beyond f64's range to ±f64::MAX (and refuses
        // one further out): a value there may stand for a larger one, so that bound is
        // excluded.
        Value::Number(n) if n.as_f64().is_some_and(|f| f.abs() >= f64::MAX) => Err(
            FieldError::new(path, "has a number beyond ±1.7976931348623157e308"),
        ),
        Value::Null | Value::Bool(_) | Value::Number(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_rounded_to_the_edge_of_f64_are_refused() {
        let beyond: serde_json::Value =
            // What Schemathesis sent: f64::MAX's digits, then zeros and a 1 (309 digits).
            serde_json::from_str(&format!("{{\"k\": 17976931348623157{}1}}", "0".repeat(291)))
                .unwrap();
        assert!(check_metadata(&beyond).is_err());
        let edge: serde_json::Value =
            serde_json::from_str("{\"k\": -1.7976931348623157e308}").unwrap();
        assert!(check_metadata(&edge).is_err());
        assert!(check_metadata(&json!({"k": 1.0e308, "n": -5})).is_ok());
    }

    #[test]
    fn control_characters_are_refused_except_tab_and_line_breaks() {
        assert!(check_text("line one\n\tline two\r\n").is_ok());
        assert!(check_text("émoji 🎉 and ünïcode").is_ok());
        for bad in [
            "a\0b",
            "\u{1}",
            "bell\u{7}",
            "del\u{7f}",
            "c1\u{85}",
            "esc\u{1b}[31m",
        ] {
            assert!(check_text(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn metadata_strings_and_keys_are_checked_at_any_depth() {
        assert!(check_metadata(&json!({"a": {"b": ["x", 1, null, true]}})).is_ok());
        let err = check_metadata(&json!({"a": {"b": ["ok", "n\u{0}ul"]}})).unwrap_err();
        assert_eq!(err.field, "metadata.a.b[1]");
        let err = check_metadata(&json!({"a": {"k\u{0}": 1}})).unwrap_err();
        assert_eq!(err.field, "metadata.a");
        let err = check_metadata(&json!([1])).unwrap_err();
        assert_eq!(err.field, "metadata");
    }

    #[test]
    fn metadata_is_bounded_in_depth_keys_and_size() {
        // depth 5 is the limit: metadata{a{b{c{d{}}}}}
        let ok = json!({"a": {"b": {"c": {"d": {}}}}});
        assert!(check_metadata(&ok).is_ok());
        let deep = json!({"a": {"b": {"c": {"d": {"e": {}}}}}});
        assert_eq!(
            check_metadata(&deep).unwrap_err().field,
            "metadata.a.b.c.d.e"
        );
        let deep_array = json!({"a": [[[[[1]]]]]});
        assert!(check_metadata(&deep_array).is_err());

        let keys = |n: usize| Value::Object((0..n).map(|i| (format!("k{i}"), json!(i))).collect());
        assert!(check_metadata(&keys(MAX_METADATA_KEYS)).is_ok());
        let err = check_metadata(&keys(MAX_METADATA_KEYS + 1)).unwrap_err();
        assert_eq!(err.field, "metadata");
        assert!(check_metadata(&keys(20_000)).is_err());

        let big = json!({"note": "x".repeat(MAX_METADATA_BYTES)});
        assert_eq!(check_metadata(&big).unwrap_err().field, "metadata");
        let fits = json!({"note": "x".repeat(MAX_METADATA_BYTES - 20)});
        assert!(check_metadata(&fits).is_ok());
    }
}
