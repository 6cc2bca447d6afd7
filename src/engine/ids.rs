//! Content-derived identifiers.
//!
//! Ids hash what a decision is about (service, fingerprint, start time,
//! runbook, attempt), never a position or a counter, so replaying a longer
//! stream, or one with results and approvals inserted, gives the same ids
//! to the same decisions.

use sha2::{Digest, Sha256};

use crate::records::Labels;
use crate::time::Timestamp;

fn short_hash(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    hex::encode(&h.finalize()[..8])
}

/// An alert's fingerprint when Alertmanager did not send one: a hash of
/// its sorted label set.
pub fn fingerprint(labels: &Labels) -> String {
    let flat: Vec<&str> = labels.iter().flat_map(|(k, v)| [k, v]).collect();
    short_hash(&flat)
}

pub fn incident_id(service: &str, fingerprint: &str, starts_at: Timestamp) -> String {
    format!(
        "inc-{}",
        short_hash(&["incident", service, fingerprint, &starts_at.to_string()])
    )
}

pub fn command_id(incident: &str, runbook: &str, attempt: u32) -> String {
    format!(
        "cmd-{}",
        short_hash(&["command", incident, runbook, &attempt.to_string()])
    )
}

pub fn rollback_id(command: &str) -> String {
    format!("cmd-{}", short_hash(&["rollback", command]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_depend_on_content_only() {
        let t = Timestamp(1_000);
        assert_eq!(incident_id("a", "f", t), incident_id("a", "f", t));
        assert_ne!(
            incident_id("a", "f", t),
            incident_id("a", "f", Timestamp(2_000))
        );
        // Length-prefixing keeps ("ab","c") and ("a","bc") apart.
        assert_ne!(incident_id("ab", "c", t), incident_id("a", "bc", t));
        let l1 = Labels::from_pairs([("a", "1"), ("b", "2")]);
        let l2 = Labels::from_pairs([("b", "2"), ("a", "1")]);
        assert_eq!(fingerprint(&l1), fingerprint(&l2));
        assert_ne!(
            command_id("i", "r", 1),
            rollback_id(&command_id("i", "r", 1))
        );
    }
}
