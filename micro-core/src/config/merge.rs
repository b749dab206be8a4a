//! Merging configuration trees and reading paths.

use serde_json::{Map, Value};

/// The layers merged in order: later values win, objects merge key by key.
pub(super) fn merge_all(layers: &[Value]) -> Value {
    let mut merged = Value::Object(Map::new());
    for layer in layers {
        merge(&mut merged, layer);
    }
    merged
}

fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(base), Value::Object(over)) => {
            for (key, value) in over {
                match base.get_mut(key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        base.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (base, over) => *base = over.clone(),
    }
}

/// The value at a dot-separated `path` (array items by index); the whole tree for `""`.
pub(super) fn at<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    if path.is_empty() {
        return Some(root);
    }
    path.split('.').try_fold(root, |value, key| match value {
        Value::Object(map) => map.get(key),
        Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

/// Sets `value` at a dot-separated `path`, creating objects on the way.
pub(super) fn set(root: &mut Value, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        *root = value;
        return;
    };
    let mut node = root;
    for key in parents {
        if !node.is_object() {
            *node = Value::Object(Map::new());
        }
        let Value::Object(map) = node else { return };
        node = map
            .entry(key.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if !node.is_object() {
        *node = Value::Object(Map::new());
    }
    if let Value::Object(map) = node {
        map.insert(last.clone(), value);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn later_layers_win_and_objects_merge() {
        let merged = merge_all(&[
            json!({"db": {"pool": 5, "host": "a"}, "name": "x"}),
            json!({"db": {"pool": 10}, "list": [1, 2]}),
            json!({"list": [3]}),
        ]);
        assert_eq!(
            merged,
            json!({"db": {"pool": 10, "host": "a"}, "name": "x", "list": [3]})
        );
        assert_eq!(at(&merged, "db.pool"), Some(&json!(10)));
        assert_eq!(at(&merged, "list.0"), Some(&json!(3)));
        assert_eq!(at(&merged, "db.missing"), None);
        assert_eq!(at(&merged, "name.deeper"), None);
    }

    #[test]
    fn set_creates_objects() {
        let mut root = json!({"a": 1});
        set(&mut root, &["a".into(), "b".into()], json!(2));
        set(&mut root, &["c".into(), "d".into(), "e".into()], json!("x"));
        assert_eq!(root, json!({"a": {"b": 2}, "c": {"d": {"e": "x"}}}));
    }
}
