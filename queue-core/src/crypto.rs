//! Encrypted payloads: [`KeyRing`], and how a job's data is sealed at dispatch and opened by
//! the worker.
//!
//! A job type declared `#[job(encrypted)]` (or a dispatch with
//! [`.encrypted()`](crate::PendingDispatch::encrypted)) has its data sealed with
//! XChaCha20-Poly1305 (RustCrypto's `chacha20poly1305`: 192-bit random nonces, safe at any
//! volume) under the key ring's **active** key. The stored envelope keeps the job's name and
//! settings readable and holds the data as `rq1:{key id}:{base64 of nonce, ciphertext and
//! tag}`; the job's name is bound as associated data, so a ciphertext moved to another job
//! type does not open.
//!
//! The worker opens it with the key the envelope **names** (never by trying every key). A
//! tampered ciphertext, a swapped job name or a key id the worker does not have sends the
//! job to the failed store as undecryptable, without retries and without running it; there
//! is no plaintext fallback. A worker with no keys at all puts encrypted jobs back for a
//! worker that has them (as a job it does not know), then fails them.
//!
//! Keys come from the environment (what `runall` and [`Queue::connect`](crate::Queue::connect)
//! read): `RUNALL_KEYS="k2:BASE64,k1:BASE64"` (ids and 32-byte keys in standard base64;
//! `runall keys generate` prints one) and `RUNALL_ACTIVE_KEY=k2` (the first by default).
//! Rotation: add the new key first and make it active; keep the old one until no stored job
//! names it (`runall keys status` counts the stored jobs per key id). A job a worker puts
//! back in its queue (a retry, a release) goes back sealed with the active key, on stores
//! that take a new payload in the settle
//! ([`Capabilities::rewrite`](crate::storage::Capabilities::rewrite): all but the file
//! driver).
//!
//! An encrypted job's unique key and limit key are made of its data, and a store keeps them
//! in the clear (claims, lock and counter names): they are replaced by an HMAC-SHA256 of
//! them under the active key (`h:` and 32 hex digits), so equal data still gives one claim.
//! Dispatchers on different active keys (during a rotation) make different stand-ins.
//!
//! ```
//! use queue_core::KeyRing;
//!
//! let ring = KeyRing::new("k2", [7; 32]).unwrap().with_key("k1", [1; 32]).unwrap();
//! assert_eq!(ring.active(), "k2");
//! let parsed = KeyRing::parse(&format!("k2:{},k1:{}", KeyRing::encode_key(&[7; 32]), KeyRing::encode_key(&[1; 32])), None).unwrap();
//! assert_eq!(parsed.ids(), ["k1", "k2"]);
//! ```

use std::collections::BTreeMap;
use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// The prefix of a sealed payload: the format's version.
const PREFIX: &str = "rq1";

/// The id of the key that sealed `sealed` (`rq1:{key id}:...`), without opening it.
pub(crate) fn key_id_of(sealed: &str) -> Option<&str> {
    let mut parts = sealed.splitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(PREFIX), Some(id), Some(_)) if !id.is_empty() => Some(id),
        _ => None,
    }
}

/// The environment variable holding the keys.
pub(crate) const KEYS_ENV: &str = "RUNALL_KEYS";
/// The environment variable naming the active key.
pub(crate) const ACTIVE_ENV: &str = "RUNALL_ACTIVE_KEY";

/// Keys for encrypted payloads, by id: one active (new jobs are sealed with it) and any
/// older ones (kept to open jobs sealed before a rotation). `Debug` shows the ids only.
#[derive(Clone)]
pub struct KeyRing {
    keys: BTreeMap<String, Zeroizing<[u8; 32]>>,
    active: String,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("ids", &self.ids())
            .field("active", &self.active)
            .finish()
    }
}

fn check_id(id: &str) -> Result<()> {
    crate::limit::check_plain_name("key id", id, 64)
}

impl KeyRing {
    /// A ring of one key, active.
    pub fn new(id: &str, key: [u8; 32]) -> Result<Self> {
        check_id(id)?;
        let mut keys = BTreeMap::new();
        keys.insert(id.to_owned(), Zeroizing::new(key));
        Ok(KeyRing {
            keys,
            active: id.to_owned(),
        })
    }

    /// Adds a key that opens jobs sealed with it (the active key stays).
    pub fn with_key(mut self, id: &str, key: [u8; 32]) -> Result<Self> {
        check_id(id)?;
        self.keys.insert(id.to_owned(), Zeroizing::new(key));
        Ok(self)
    }

    /// Makes `id` the active key.
    pub fn activate(mut self, id: &str) -> Result<Self> {
        if !self.keys.contains_key(id) {
            return Err(Error::Config(format!(
                "no key with id {id:?} to make active"
            )));
        }
        self.active = id.to_owned();
        Ok(self)
    }

    /// The ids of the keys that sealed a stored job's payload (its whole data, or its
    /// secret fields), sorted, read without opening anything: empty for a job with nothing
    /// sealed, `None` for a payload that is not a job envelope. What `runall keys status`
    /// counts.
    pub fn sealed_by(payload: &[u8]) -> Option<Vec<String>> {
        let envelope = crate::envelope::Envelope::decode(payload).ok()?;
        let mut ids = match envelope.sealed.as_deref().and_then(key_id_of) {
            Some(id) => vec![id.to_owned()],
            None => crate::secret::key_ids(&envelope.data),
        };
        ids.sort_unstable();
        ids.dedup();
        Some(ids)
    }

    /// `payload` (a stored job) with what it holds sealed by another key than the active one
    /// sealed again with the active key: its whole data, or its secret fields. `None` when
    /// nothing in it is sealed by another key, or when it cannot be opened (the job then
    /// keeps its sealing, and its run says why it cannot be opened). What a worker does to
    /// a job it retries, so that an old key stops sealing stored jobs.
    pub(crate) fn reseal(&self, payload: &[u8]) -> Option<Vec<u8>> {
        // A cheap look first: this runs for every retry and release.
        if !payload.windows(5).any(|w| w == b"\"rq1:") {
            return None;
        }
        let ids = Self::sealed_by(payload)?;
        if ids.iter().all(|id| *id == self.active) {
            return None;
        }
        let mut value: serde_json::Value = serde_json::from_slice(payload).ok()?;
        let name = value.get("name")?.as_str()?.to_owned();
        if let Some(sealed) = value.get("sealed").and_then(serde_json::Value::as_str) {
            let plain = self.open(&name, sealed).ok()?;
            let again = self.seal(&name, &plain).ok()?;
            value["sealed"] = serde_json::Value::String(again);
        } else {
            let data = serde_json::value::to_raw_value(value.get("data")?).ok()?;
            let opened = crate::secret::open(self, &name, &data).ok()?;
            let again = crate::secret::seal(self, &name, &opened).ok()?;
            value["data"] = serde_json::from_str(again.get()).ok()?;
        }
        serde_json::to_vec(&value).ok()
    }

    /// The active key's id.
    pub fn active(&self) -> &str {
        &self.active
    }

    /// The ids of the keys, sorted.
    pub fn ids(&self) -> Vec<&str> {
        self.keys.keys().map(String::as_str).collect()
    }

    /// A 32-byte key in the form `RUNALL_KEYS` takes (standard base64).
    pub fn encode_key(key: &[u8; 32]) -> String {
        STANDARD.encode(key)
    }

    /// A new random key, encoded (`runall keys generate`).
    pub fn generate_key() -> String {
        Self::encode_key(&rand::random::<[u8; 32]>())
    }

    /// Reads `"id:BASE64,id:BASE64"`; `active` names the active key (the first by default).
    pub fn parse(keys: &str, active: Option<&str>) -> Result<Self> {
        let mut ring: Option<KeyRing> = None;
        for entry in keys.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (id, key) = entry.split_once(':').ok_or_else(|| {
                Error::Config(format!(
                    "{KEYS_ENV}: each key is `id:BASE64`, and one is not (its id is not shown \
                     in case it is a key)"
                ))
            })?;
            let bytes = Zeroizing::new(STANDARD.decode(key.trim()).map_err(|_| {
                Error::Config(format!("{KEYS_ENV}: key {id:?} is not standard base64"))
            })?);
            let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                Error::Config(format!(
                    "{KEYS_ENV}: key {id:?} is {} bytes, and a key is 32 (`runall keys generate`)",
                    bytes.len()
                ))
            })?;
            let key = Zeroizing::new(key);
            ring = Some(match ring {
                None => KeyRing::new(id, *key)?,
                Some(ring) => {
                    if ring.keys.contains_key(id) {
                        return Err(Error::Config(format!("{KEYS_ENV}: key id {id:?} twice")));
                    }
                    ring.with_key(id, *key)?
                }
            });
        }
        let ring = ring.ok_or_else(|| Error::Config(format!("{KEYS_ENV} holds no key")))?;
        match active {
            Some(id) => ring.activate(id.trim()),
            None => Ok(ring),
        }
    }

    /// The ring of `RUNALL_KEYS` and `RUNALL_ACTIVE_KEY`; `Ok(None)` when `RUNALL_KEYS` is
    /// not set.
    pub fn from_env() -> Result<Option<Self>> {
        let Ok(keys) = std::env::var(KEYS_ENV) else {
            return Ok(None);
        };
        let active = std::env::var(ACTIVE_ENV).ok();
        Self::parse(&keys, active.as_deref()).map(Some)
    }

    fn aad(name: &str) -> Vec<u8> {
        let mut aad = b"runall/1\0".to_vec();
        aad.extend_from_slice(name.as_bytes());
        aad
    }

    /// A stand-in for `value` that names it without showing it: `h:` and the first 16 bytes
    /// (hex) of HMAC-SHA256 under the active key of `purpose`, `scope` and `value`. The
    /// unique and limit keys of an encrypted job are blinded this way, so the claims and
    /// limit counters a store keeps in the clear never hold the job's data. The same value
    /// gives the same stand-in for every process with the same active key; after a
    /// rotation, the new key gives another (see the crate docs on rotation).
    pub(crate) fn blind(&self, purpose: &str, scope: &str, value: &str) -> Result<String> {
        use hmac::{Hmac, Mac};
        use std::fmt::Write as _;
        let key = self
            .keys
            .get(&self.active)
            .ok_or_else(|| Error::Config("the active key is missing".to_owned()))?;
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key.as_slice())
            .map_err(|e| Error::Config(format!("the active key cannot key an HMAC: {e}")))?;
        for part in ["runall/blind/1", purpose, scope, value] {
            mac.update(part.as_bytes());
            mac.update(b"\0");
        }
        let digest = mac.finalize().into_bytes();
        let mut out = String::from("h:");
        for byte in &digest[..16] {
            let _ = write!(out, "{byte:02x}");
        }
        Ok(out)
    }

    /// Seals `plain` (a job's data) for the job `name` with the active key.
    pub(crate) fn seal(&self, name: &str, plain: &[u8]) -> Result<String> {
        let key = self
            .keys
            .get(&self.active)
            .ok_or_else(|| Error::Config("the active key is missing".to_owned()))?;
        let cipher = XChaCha20Poly1305::new(key.as_slice().into());
        let nonce = rand::random::<[u8; 24]>();
        let aad = Self::aad(name);
        let sealed = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: &aad,
                },
            )
            .map_err(|_| Error::Payload(format!("job `{name}` could not be encrypted")))?;
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        Ok(format!(
            "{PREFIX}:{}:{}",
            self.active,
            STANDARD.encode(bytes)
        ))
    }

    /// Opens what [`seal`](Self::seal) made for the job `name`, with the key it names. The
    /// error says why, never with any of the data.
    pub(crate) fn open(&self, name: &str, sealed: &str) -> std::result::Result<Vec<u8>, String> {
        let mut parts = sealed.splitn(3, ':');
        let (Some(PREFIX), Some(id), Some(body)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err("not a sealed payload of a known format".to_owned());
        };
        let key = self.keys.get(id).ok_or_else(|| {
            format!(
                "sealed with key {id:?}, which this worker does not have (it has {:?})",
                self.ids()
            )
        })?;
        let bytes = STANDARD
            .decode(body)
            .map_err(|_| "the sealed payload is not base64".to_owned())?;
        if bytes.len() < 24 + 16 {
            return Err("the sealed payload is too short".to_owned());
        }
        let (nonce, ciphertext) = bytes.split_at(24);
        let cipher = XChaCha20Poly1305::new(key.as_slice().into());
        let aad = Self::aad(name);
        cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| {
                format!(
                    "the sealed payload does not open with key {id:?} for job `{name}`: it was \
                     changed, or sealed for another job"
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> KeyRing {
        KeyRing::new("k2", [2; 32])
            .unwrap()
            .with_key("k1", [1; 32])
            .unwrap()
    }

    #[test]
    fn blinds_without_showing_and_repeatably() {
        let ring = ring();
        let a = ring.blind("unique", "pay", "iban=DE00").unwrap();
        assert!(a.starts_with("h:") && a.len() == 34, "{a}");
        assert!(!a.contains("DE00"));
        assert_eq!(a, ring.blind("unique", "pay", "iban=DE00").unwrap());
        assert_ne!(a, ring.blind("unique", "pay", "iban=DE01").unwrap());
        assert_ne!(a, ring.blind("limit", "pay", "iban=DE00").unwrap());
        // The parts are separated: ("ab", "c") is not ("a", "bc").
        assert_ne!(
            ring.blind("unique", "ab", "c").unwrap(),
            ring.blind("unique", "a", "bc").unwrap()
        );
        let rotated = ring.clone().activate("k1").unwrap();
        assert_ne!(a, rotated.blind("unique", "pay", "iban=DE00").unwrap());
    }

    #[test]
    fn seals_and_opens() {
        let ring = ring();
        let sealed = ring.seal("pay", b"{\"iban\":\"DE00\"}").unwrap();
        assert!(sealed.starts_with("rq1:k2:"), "{sealed}");
        assert!(!sealed.contains("DE00"));
        assert_eq!(ring.open("pay", &sealed).unwrap(), b"{\"iban\":\"DE00\"}");
        // Two seals of the same data differ (random nonces).
        assert_ne!(sealed, ring.seal("pay", b"{\"iban\":\"DE00\"}").unwrap());
    }

    #[test]
    fn refuses_what_was_changed_moved_or_sealed_with_an_unknown_key() {
        let ring = ring();
        let sealed = ring.seal("pay", b"secret").unwrap();
        // A flipped byte of the ciphertext.
        let (head, body) = sealed.rsplit_once(':').unwrap();
        let mut bytes = STANDARD.decode(body).unwrap();
        bytes[30] ^= 1;
        let tampered = format!("{head}:{}", STANDARD.encode(bytes));
        assert!(ring
            .open("pay", &tampered)
            .unwrap_err()
            .contains("was changed"));
        // Another job's name.
        assert!(ring
            .open("refund", &sealed)
            .unwrap_err()
            .contains("another job"));
        // A key this ring does not have.
        let other = KeyRing::new("k9", [9; 32])
            .unwrap()
            .seal("pay", b"x")
            .unwrap();
        assert!(ring.open("pay", &other).unwrap_err().contains("\"k9\""));
        // An older key still opens what it sealed (rotation).
        let old = ring
            .clone()
            .activate("k1")
            .unwrap()
            .seal("pay", b"old")
            .unwrap();
        assert_eq!(ring.open("pay", &old).unwrap(), b"old");
        assert!(ring.open("pay", "rq9:k2:AAAA").is_err());
        assert!(ring
            .open("pay", "rq1:k2:AAAA")
            .unwrap_err()
            .contains("too short"));
    }

    #[test]
    fn parses_keys() {
        let (a, b) = (KeyRing::encode_key(&[1; 32]), KeyRing::encode_key(&[2; 32]));
        let ring = KeyRing::parse(&format!("k1:{a}, k2:{b}"), Some("k2")).unwrap();
        assert_eq!((ring.ids(), ring.active()), (vec!["k1", "k2"], "k2"));
        assert_eq!(
            KeyRing::parse(&format!("k1:{a}"), None).unwrap().active(),
            "k1"
        );
        for (bad, says) in [
            ("", "holds no key"),
            ("k1", "`id:BASE64`"),
            ("k1:!!", "not standard base64"),
            ("k1:AAAA", "is 3 bytes"),
        ] {
            let err = KeyRing::parse(bad, None).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
        let twice = KeyRing::parse(&format!("k1:{a},k1:{b}"), None).unwrap_err();
        assert!(twice.to_string().contains("twice"));
        let missing = KeyRing::parse(&format!("k1:{a}"), Some("k3")).unwrap_err();
        assert!(missing.to_string().contains("k3"));
        assert!(!format!("{ring:?}").contains(&a), "Debug shows no key");
        assert_eq!(STANDARD.decode(KeyRing::generate_key()).unwrap().len(), 32);
    }
}
