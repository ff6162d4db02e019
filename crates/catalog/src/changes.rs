//! Changes to a served catalog: an item upserted (added, or its vector and/or attributes
//! replaced) or deleted, validated like `import items` before anything is stored.
//!
//! ```
//! use pinnersage_catalog::changes::{ItemChange, ItemError, Rules};
//! let rules = Rules { dim: 2, normalize: true };
//! let attributes = serde_json::json!({"lang": "en", "year": 1995, "tags": ["a", "b"]});
//! let change = ItemChange::upsert("pin-9", Some(vec![3.0, 4.0]), Some(&attributes), &rules).unwrap();
//! let ItemChange::Upsert { vector, .. } = &change else { unreachable!() };
//! assert_eq!(vector.as_deref(), Some(&[0.6, 0.8][..])); // normalised as at import
//! let err = ItemChange::upsert("pin-9", Some(vec![1.0]), None, &rules).unwrap_err();
//! assert_eq!(err.to_string(), "`embedding` has 1 values, expected 2");
//! let bad = serde_json::json!({"price": {"eur": 3}});
//! let err = ItemChange::upsert("pin-9", None, Some(&bad), &rules).unwrap_err();
//! assert!(err.to_string().starts_with("attribute `price` is an object"));
//! ```

use serde_json::Value;

use crate::catalog::RowError;

/// Longest item id accepted, in bytes (the event store's limit too).
pub const MAX_ITEM_ID_BYTES: usize = 1024;

/// One change to the catalog, validated (see [`ItemChange::upsert`], [`ItemChange::delete`]).
#[derive(Debug, Clone, PartialEq)]
pub enum ItemChange {
    /// Adds the item, or replaces what is given of it.
    Upsert {
        /// The item id.
        id: String,
        /// The new vector (normalised if the catalog is); `None` keeps the current one.
        vector: Option<Vec<f32>>,
        /// The new attributes (a JSON object text); `None` keeps the current ones.
        attributes: Option<String>,
    },
    /// Removes the item.
    Delete {
        /// The item id.
        id: String,
    },
}

/// What the catalog requires of an item (its dimension, whether vectors are normalised).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// Embedding dimension.
    pub dim: usize,
    /// Whether vectors are L2-normalised on the way in.
    pub normalize: bool,
}

/// Why an item change was refused; the caller adds which item it was.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ItemError {
    /// The id is empty or too long.
    #[error("`id` {0}")]
    Id(&'static str),
    /// The vector is unusable.
    #[error("`embedding` {0}")]
    Vector(RowError),
    /// The attributes are not a JSON object.
    #[error("`attributes` must be a JSON object of attribute names to values")]
    NotAnObject,
    /// An attribute value of a type filters cannot test.
    #[error(
        "attribute `{name}` is {found}; attribute values are strings, numbers, booleans or lists of them"
    )]
    AttributeType {
        /// The attribute.
        name: String,
        /// What it is (`an object`, `null`, `a list holding an object`).
        found: &'static str,
    },
    /// Neither a vector nor attributes: nothing to change.
    #[error("an upsert needs `embedding`, `attributes` or both")]
    Empty,
    /// Attributes alone for an item the catalog does not have (a new item needs a vector).
    #[error("item {0:?} is not in the catalog: a new item needs an `embedding`")]
    NoVector(String),
    /// A delete of an item the catalog does not have.
    #[error("item {0:?} is not in the catalog")]
    Unknown(String),
}

impl pinnersage_core::error::Kind for ItemError {
    fn kind(&self) -> pinnersage_core::error::ErrorKind {
        use pinnersage_core::error::ErrorKind::*;
        match self {
            Self::NoVector(_) | Self::Unknown(_) => NotFound,
            _ => BadInput,
        }
    }
}

fn check_id(id: &str) -> Result<(), ItemError> {
    if id.is_empty() {
        Err(ItemError::Id("is empty"))
    } else if id.len() > MAX_ITEM_ID_BYTES {
        Err(ItemError::Id("is longer than 1024 bytes"))
    } else {
        Ok(())
    }
}

/// What a JSON value is, for an error message.
fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Object(_) => "an object",
        Value::Array(_) => "a list holding a list, an object or null",
        _ => "a plain value",
    }
}

fn plain(value: &Value) -> bool {
    matches!(value, Value::String(_) | Value::Number(_) | Value::Bool(_))
}

/// Checks attributes the way filters read them, and returns their JSON text.
fn check_attributes(attributes: &Value) -> Result<String, ItemError> {
    let Value::Object(map) = attributes else {
        return Err(ItemError::NotAnObject);
    };
    for (name, value) in map {
        let fine = match value {
            Value::Array(items) => items.iter().all(plain),
            other => plain(other),
        };
        if !fine {
            return Err(ItemError::AttributeType {
                name: name.clone(),
                found: type_name(value),
            });
        }
    }
    Ok(attributes.to_string())
}

/// Checks a vector like an imported row, normalised if the catalog is.
fn check_vector(mut vector: Vec<f32>, rules: &Rules) -> Result<Vec<f32>, ItemError> {
    crate::catalog::check_vector(&mut vector, rules.dim, rules.normalize)
        .map_err(ItemError::Vector)?;
    Ok(vector)
}

impl ItemChange {
    /// A validated upsert of `id`: the vector checked (and normalised) like an imported row, the
    /// attributes checked to be an object of strings, numbers, booleans or lists of them.
    pub fn upsert(
        id: &str,
        vector: Option<Vec<f32>>,
        attributes: Option<&Value>,
        rules: &Rules,
    ) -> Result<Self, ItemError> {
        check_id(id)?;
        if vector.is_none() && attributes.is_none() {
            return Err(ItemError::Empty);
        }
        Ok(Self::Upsert {
            id: id.to_owned(),
            vector: vector.map(|v| check_vector(v, rules)).transpose()?,
            attributes: attributes.map(check_attributes).transpose()?,
        })
    }

    /// A validated delete of `id`.
    pub fn delete(id: &str) -> Result<Self, ItemError> {
        check_id(id)?;
        Ok(Self::Delete { id: id.to_owned() })
    }

    /// The item the change is about.
    pub fn id(&self) -> &str {
        match self {
            Self::Upsert { id, .. } | Self::Delete { id } => id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const RULES: Rules = Rules {
        dim: 3,
        normalize: false,
    };

    #[test]
    fn every_bad_part_is_named() {
        let err = |id: &str, v: Option<Vec<f32>>, a: Option<Value>| {
            ItemChange::upsert(id, v, a.as_ref(), &RULES)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(err("", Some(vec![0.0; 3]), None), "`id` is empty");
        assert!(err(&"x".repeat(1025), Some(vec![0.0; 3]), None).contains("longer than 1024"));
        assert!(err("a", Some(vec![1.0, f32::NAN, 0.0]), None).contains("value 1 is not finite"));
        assert!(err("a", Some(vec![1.0]), None).contains("has 1 values, expected 3"));
        assert!(err("a", None, None).contains("needs `embedding`, `attributes` or both"));
        assert!(err("a", None, Some(json!([1]))).contains("must be a JSON object"));
        assert!(err("a", None, Some(json!({"x": null}))).contains("`x` is null"));
        assert!(err("a", None, Some(json!({"x": [{"y": 1}]}))).contains("`x` is a list holding"));
        let zero = ItemChange::upsert(
            "a",
            Some(vec![0.0; 3]),
            None,
            &Rules {
                normalize: true,
                ..RULES
            },
        );
        assert!(zero.unwrap_err().to_string().contains("zero length"));
        assert_eq!(
            ItemChange::delete("").unwrap_err().to_string(),
            "`id` is empty"
        );
    }

    #[test]
    fn a_good_item_keeps_its_values() {
        let change = ItemChange::upsert(
            "a",
            Some(vec![1.0, 2.0, 2.0]),
            Some(&json!({"tags": ["x", 1, true], "n": 2})),
            &RULES,
        )
        .unwrap();
        assert_eq!(
            change,
            ItemChange::Upsert {
                id: "a".into(),
                vector: Some(vec![1.0, 2.0, 2.0]),
                attributes: Some(r#"{"n":2,"tags":["x",1,true]}"#.into()),
            }
        );
        assert_eq!(change.id(), "a");
    }
}
