//! Signed approvals. With an approval key, an approval carries `sig`: the
//! HMAC-SHA256, in hex, of its command id, decision and approver, under a
//! key shared by the engine and whoever may approve (`selfheal approve` and
//! `reject` sign with `--approval-key-file`). The engine checks it when the
//! record arrives, before the decision core: an approval without a valid
//! signature goes to the dead-letter topic (code `unauthenticated`) and is
//! never decided on, so a replay of what the core saw stays exact.
//!
//! The approver cannot be bound to the Kafka principal that produced the
//! record instead: a consumer does not see the producer's SASL principal.

use std::fmt;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::records::{Approval, Verdict};

/// Domain separation for the signed message.
const CONTEXT: &[u8] = b"selfheal-approval-v1";

/// A shared approval key. Its bytes are never shown (`Debug` says
/// `<redacted>`).
#[derive(Clone)]
pub struct ApprovalKey(Vec<u8>);

impl fmt::Debug for ApprovalKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApprovalKey(<redacted>)")
    }
}

/// Why an approval key could not be loaded. Never holds the key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the approval key file {file}: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the approval key file {0} is empty")]
    Empty(String),
}

/// Why an approval was not accepted as signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("approval of {command_id} by {by} has no signature")]
    Missing { command_id: String, by: String },
    #[error("approval of {command_id} by {by} has a signature that does not match")]
    Mismatch { command_id: String, by: String },
}

impl ApprovalKey {
    /// The key in a file: its bytes without surrounding whitespace.
    pub fn load(path: &Path) -> Result<ApprovalKey, KeyError> {
        let file = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| KeyError::Read {
            file: file.clone(),
            source,
        })?;
        ApprovalKey::from_bytes(&bytes).ok_or(KeyError::Empty(file))
    }

    /// A key from bytes (surrounding ASCII whitespace dropped); `None`
    /// when nothing is left.
    pub fn from_bytes(bytes: &[u8]) -> Option<ApprovalKey> {
        let key = bytes.trim_ascii();
        (!key.is_empty()).then(|| ApprovalKey(key.to_vec()))
    }

    fn mac(&self, command_id: &str, decision: Verdict, by: &str) -> Hmac<Sha256> {
        // HMAC takes keys of any length.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("any key length");
        mac.update(CONTEXT);
        for field in [command_id, decision.as_str(), by] {
            mac.update(&(field.len() as u64).to_be_bytes());
            mac.update(field.as_bytes());
        }
        mac
    }

    /// The signature of an approval, in lowercase hex.
    pub fn sign(&self, command_id: &str, decision: Verdict, by: &str) -> String {
        hex::encode(self.mac(command_id, decision, by).finalize().into_bytes())
    }

    /// Checks an approval's signature (in constant time).
    pub fn verify(&self, a: &Approval) -> Result<(), SignatureError> {
        let sig = a.sig.as_deref().ok_or_else(|| SignatureError::Missing {
            command_id: a.command_id.clone(),
            by: a.by.clone(),
        })?;
        let mismatch = || SignatureError::Mismatch {
            command_id: a.command_id.clone(),
            by: a.by.clone(),
        };
        let bytes = hex::decode(sig).map_err(|_| mismatch())?;
        self.mac(&a.command_id, a.decision, &a.by)
            .verify_slice(&bytes)
            .map_err(|_| mismatch())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approval(id: &str, decision: Verdict, by: &str, sig: Option<String>) -> Approval {
        Approval {
            command_id: id.into(),
            decision,
            by: by.into(),
            at: None,
            sig,
        }
    }

    #[test]
    fn a_signature_covers_command_decision_and_approver() {
        let key = ApprovalKey::from_bytes(b"s3cret\n").unwrap();
        let sig = key.sign("cmd-1", Verdict::Approve, "alice");
        assert_eq!(sig.len(), 64);
        let good = approval("cmd-1", Verdict::Approve, "alice", Some(sig.clone()));
        assert_eq!(key.verify(&good), Ok(()));
        for bad in [
            approval("cmd-2", Verdict::Approve, "alice", Some(sig.clone())),
            approval("cmd-1", Verdict::Reject, "alice", Some(sig.clone())),
            approval("cmd-1", Verdict::Approve, "mallory", Some(sig.clone())),
            approval("cmd-1", Verdict::Approve, "alice", Some("zz".into())),
            approval(
                "cmd-1",
                Verdict::Approve,
                "alice",
                Some(sig.to_uppercase() + "00"),
            ),
        ] {
            assert!(
                matches!(key.verify(&bad), Err(SignatureError::Mismatch { .. })),
                "{bad:?}"
            );
        }
        let other = ApprovalKey::from_bytes(b"another").unwrap();
        assert!(other.verify(&good).is_err());
        let unsigned = approval("cmd-1", Verdict::Approve, "alice", None);
        assert_eq!(
            key.verify(&unsigned).unwrap_err().to_string(),
            "approval of cmd-1 by alice has no signature"
        );
        // Field boundaries are part of the message.
        assert_ne!(
            key.sign("ab", Verdict::Approve, "c"),
            key.sign("a", Verdict::Approve, "bc")
        );
    }

    #[test]
    fn keys_are_never_shown_and_empty_ones_refused() {
        let key = ApprovalKey::from_bytes(b"hunter2").unwrap();
        assert!(!format!("{key:?}").contains("hunter2"));
        assert!(ApprovalKey::from_bytes(b" \n\t").is_none());
    }
}
