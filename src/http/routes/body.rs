//! Request bodies are JSON objects. serde's derived `Deserialize` also takes a JSON array
//! of a struct's field values in order (and fills defaulted fields when it is short), so
//! `[]` would pass as an empty change; every JSON body is read through [`JsonObject`].

use std::marker::PhantomData;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// `T`, from a JSON object only.
pub struct JsonObject<T>(pub T);

impl<T> JsonObject<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for JsonObject<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for Fields<T> {
            type Value = T;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }

        deserializer
            .deserialize_map(Fields(PhantomData))
            .map(JsonObject)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Change {
        #[serde(default)]
        name: Option<String>,
    }

    #[test]
    fn only_objects_are_bodies() {
        // What the derive alone accepts, and this refuses.
        assert!(serde_json::from_str::<Change>("[]").is_ok());
        let refused = serde_json::from_str::<JsonObject<Change>>("[]")
            .err()
            .unwrap();
        assert!(refused.to_string().contains("a JSON object"), "{refused}");
        assert!(serde_json::from_str::<JsonObject<Change>>("\"x\"").is_err());
        let taken = serde_json::from_str::<JsonObject<Change>>(r#"{"name":"a"}"#).unwrap();
        assert_eq!(taken.into_inner().name.as_deref(), Some("a"));
    }
}
