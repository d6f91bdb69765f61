//! Secret job fields: see [`Secret`].

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::crypto::KeyRing;
use crate::error::{Error, Result};

/// The key a secret value is written under.
pub(crate) const MARK: &str = "$secret";

/// One field of a job kept secret: sealed in the stored job and never printed,
/// while the rest of the job stays readable (for `runall failed show`, the dashboard,
/// debugging).
///
/// A `Secret<T>` field serializes as `{"$secret": value}`. When the job is stored, every such
/// value is sealed with the queue's [`KeyRing`](crate::KeyRing) (XChaCha20-Poly1305 under the
/// active key, the job's name bound as associated data, as `#[job(encrypted)]` seals a whole
/// job) and the store holds `{"$secret": "rq1:{key id}:{ciphertext}"}`. The worker opens it
/// before the job is decoded; its `Debug` prints `Secret([redacted])`. A unique or limit key
/// made of a secret field is stored as an HMAC stand-in, as an encrypted job's is.
///
/// ```
/// use queue_core::Secret;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Serialize, Deserialize)]
/// struct Payout {
///     account: u64,
///     iban: Secret<String>,
/// }
///
/// let payout = Payout { account: 7, iban: Secret::new("DE44 5001 0517 5407 3249 31".into()) };
/// assert_eq!(format!("{payout:?}"), "Payout { account: 7, iban: Secret([redacted]) }");
/// assert_eq!(payout.iban.expose(), "DE44 5001 0517 5407 3249 31");
/// ```
///
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps a value.
    pub fn new(value: T) -> Self {
        Secret(value)
    }

    /// The value, for the code that needs it.
    pub fn expose(&self) -> &T {
        &self.0
    }

    /// The value, consuming the wrapper.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Secret(value)
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl<T: Serialize> Serialize for Secret<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(MARK, &self.0)?;
        map.end()
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Secret<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct Marked<T>(std::marker::PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for Marked<T> {
            type Value = Secret<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a secret value, as {{\"{MARK}\": value}}")
            }

            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                let mut value = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key != MARK || value.is_some() {
                        return Err(de::Error::custom(format!(
                            "a secret value has one key, `{MARK}`"
                        )));
                    }
                    value = Some(map.next_value::<T>()?);
                }
                value
                    .map(Secret)
                    .ok_or_else(|| de::Error::custom(format!("a secret value has no `{MARK}`")))
            }
        }

        deserializer.deserialize_map(Marked(std::marker::PhantomData))
    }
}

/// Whether encoded job data may hold secret values (a cheap look for the mark).
pub(crate) fn may_hold(data: &str) -> bool {
    data.contains("\"$secret\"")
}

/// `data` with every secret value sealed by `keys` for the job `name`.
pub(crate) fn seal(keys: &KeyRing, name: &str, data: &RawValue) -> Result<Box<RawValue>> {
    let mut value: Value = serde_json::from_str(data.get())
        .map_err(|e| Error::Payload(format!("job `{name}`: {e}")))?;
    let mut failed = None;
    walk(&mut value, &mut |inner| {
        let plain = inner.to_string();
        match keys.seal(name, plain.as_bytes()) {
            Ok(sealed) => *inner = Value::String(sealed),
            Err(e) => failed = Some(e),
        }
    });
    if let Some(e) = failed {
        return Err(e);
    }
    to_raw(&value, name)
}

/// `data` with every sealed secret value opened by `keys`: `Err` says why one cannot be.
pub(crate) fn open(
    keys: &KeyRing,
    name: &str,
    data: &RawValue,
) -> std::result::Result<Box<RawValue>, String> {
    let mut value: Value =
        serde_json::from_str(data.get()).map_err(|e| format!("the job's data: {e}"))?;
    let mut failed = None;
    walk(&mut value, &mut |inner| {
        let Value::String(sealed) = inner else {
            failed = Some("a secret value is not sealed".to_owned());
            return;
        };
        let opened = keys.open(name, sealed).and_then(|plain| {
            serde_json::from_slice::<Value>(&plain)
                .map_err(|_| "an opened secret value is not JSON".to_owned())
        });
        match opened {
            Ok(plain) => *inner = plain,
            Err(e) => failed = Some(e),
        }
    });
    if let Some(e) = failed {
        return Err(e);
    }
    to_raw(&value, name).map_err(|e| e.to_string())
}

/// The ids of the keys that sealed the secret values of `data` (none for a job without
/// secret fields or with data that is not JSON).
pub(crate) fn key_ids(data: &RawValue) -> Vec<String> {
    if !may_hold(data.get()) {
        return Vec::new();
    }
    let Ok(mut value) = serde_json::from_str::<Value>(data.get()) else {
        return Vec::new();
    };
    let mut ids = Vec::new();
    walk(&mut value, &mut |inner| {
        if let Some(id) = inner.as_str().and_then(crate::crypto::key_id_of) {
            ids.push(id.to_owned());
        }
    });
    ids
}

/// Calls `each` on the value of every `{"$secret": value}` object in `value`.
fn walk(value: &mut Value, each: &mut dyn FnMut(&mut Value)) {
    match value {
        Value::Object(map) if is_marked(map) => {
            if let Some(inner) = map.get_mut(MARK) {
                each(inner);
            }
        }
        Value::Object(map) => map.values_mut().for_each(|v| walk(v, each)),
        Value::Array(items) => items.iter_mut().for_each(|v| walk(v, each)),
        _ => {}
    }
}

fn is_marked(map: &Map<String, Value>) -> bool {
    map.len() == 1 && map.contains_key(MARK)
}

fn to_raw(value: &Value, name: &str) -> Result<Box<RawValue>> {
    serde_json::value::to_raw_value(value).map_err(|e| Error::Payload(format!("job `{name}`: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> KeyRing {
        KeyRing::new("k1", [7; 32]).unwrap()
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Payout {
        account: u64,
        iban: Secret<String>,
        notes: Vec<Secret<u32>>,
    }

    #[test]
    fn sealed_in_storage_opened_for_the_job() {
        let payout = Payout {
            account: 7,
            iban: Secret::new("DE44".into()),
            notes: vec![Secret::new(1), Secret::new(2)],
        };
        let raw = serde_json::value::to_raw_value(&payout).unwrap();
        assert!(may_hold(raw.get()));
        let sealed = seal(&ring(), "payout", &raw).unwrap();
        assert!(!sealed.get().contains("DE44"), "{}", sealed.get());
        assert!(sealed.get().contains("\"account\":7"));
        assert!(serde_json::from_str::<Payout>(sealed.get()).is_err());
        let opened = open(&ring(), "payout", &sealed).unwrap();
        assert_eq!(
            serde_json::from_str::<Payout>(opened.get()).unwrap(),
            payout
        );
        let moved = open(&ring(), "refund", &sealed).unwrap_err();
        assert!(!moved.is_empty());
        let plain = open(&ring(), "payout", &raw).unwrap_err();
        assert!(plain.contains("not sealed"), "{plain}");
        // What `runall keys status` reads: the key of every sealed field, none in plain data.
        assert_eq!(key_ids(&sealed), ["k1", "k1", "k1"]);
        assert!(key_ids(&opened).is_empty());
    }

    #[test]
    fn debug_never_prints_the_value() {
        let secret = Secret::new("hunter2".to_owned());
        assert_eq!(format!("{secret:?}"), "Secret([redacted])");
        assert_eq!(
            format!("{:#?}", Some(&secret)),
            "Some(\n    Secret([redacted]),\n)"
        );
    }
}
