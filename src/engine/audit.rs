//! Audit records: one per decision, hash-chained per service.
//!
//! `hash` is the SHA-256 of `prev_hash` followed by the record's canonical
//! JSON without `hash`: keys sorted, no whitespace, as serde_json writes a
//! `Value` (whose maps are ordered). Anyone can recompute the chain from
//! the audit topic alone; [`verify_chain`] does.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use crate::records::Audit;

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The canonical JSON of an audit record without its `hash`.
pub fn canonical_json(a: &Audit) -> String {
    let mut v = serde_json::to_value(a).unwrap_or(serde_json::Value::Null);
    if let Some(m) = v.as_object_mut() {
        m.remove("hash");
    }
    v.to_string()
}

pub fn compute_hash(a: &Audit) -> String {
    let mut h = Sha256::new();
    h.update(a.prev_hash.as_bytes());
    h.update(canonical_json(a).as_bytes());
    hex::encode(h.finalize())
}

/// Per-service chain heads: the next sequence number and the last hash.
#[derive(Debug, Default)]
pub struct Chains {
    heads: HashMap<String, (u64, String)>,
}

impl Chains {
    /// Fills `seq`, `prev_hash` and `hash` and advances the service's chain.
    pub fn seal(&mut self, mut a: Audit) -> Audit {
        let head = self
            .heads
            .entry(a.service.clone())
            .or_insert_with(|| (0, GENESIS.to_string()));
        a.seq = head.0 + 1;
        a.prev_hash = head.1.clone();
        a.hash = compute_hash(&a);
        *head = (a.seq, a.hash.clone());
        a
    }
}

/// Where a chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("service {service}: record seq {seq} has prev_hash {found}, expected {expected}")]
    Broken {
        service: String,
        seq: u64,
        expected: String,
        found: String,
    },
    #[error("service {service}: record seq {seq} hash does not match its content")]
    Tampered { service: String, seq: u64 },
    #[error("service {service}: seq {found} follows {expected_prev}")]
    Gap {
        service: String,
        expected_prev: u64,
        found: u64,
    },
}

/// Checks that `a` follows a chain whose last record has `seq` and
/// `prev` as its hash (0 and [`GENESIS`] for an empty chain).
pub fn check_link(a: &Audit, seq: u64, prev: &str) -> Result<(), ChainError> {
    if a.seq != seq + 1 {
        return Err(ChainError::Gap {
            service: a.service.clone(),
            expected_prev: seq,
            found: a.seq,
        });
    }
    if a.prev_hash != prev {
        return Err(ChainError::Broken {
            service: a.service.clone(),
            seq: a.seq,
            expected: prev.to_string(),
            found: a.prev_hash.clone(),
        });
    }
    if compute_hash(a) != a.hash {
        return Err(ChainError::Tampered {
            service: a.service.clone(),
            seq: a.seq,
        });
    }
    Ok(())
}

/// Checks every service's chain in the given order of records.
pub fn verify_chain<'a>(records: impl IntoIterator<Item = &'a Audit>) -> Result<usize, ChainError> {
    let mut heads: HashMap<&str, (u64, &str)> = HashMap::new();
    let mut n = 0;
    for a in records {
        let (seq, prev) = heads
            .get(a.service.as_str())
            .copied()
            .unwrap_or((0, GENESIS));
        check_link(a, seq, prev)?;
        heads.insert(&a.service, (a.seq, &a.hash));
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Timestamp;

    fn rec(service: &str, decision: &str) -> Audit {
        Audit {
            seq: 0,
            ts: Timestamp(0),
            service: service.into(),
            decision: decision.into(),
            incident: None,
            runbook: None,
            inputs: vec![],
            reasons: vec!["because".into()],
            guardrails: vec![],
            outputs: vec![],
            policy_version: "sha256:0".into(),
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    #[test]
    fn chains_are_per_service_and_detect_tampering() {
        let mut c = Chains::default();
        let a1 = c.seal(rec("a", "x"));
        let b1 = c.seal(rec("b", "x"));
        let a2 = c.seal(rec("a", "y"));
        assert_eq!(a1.prev_hash, GENESIS);
        assert_eq!(b1.prev_hash, GENESIS);
        assert_eq!(a2.prev_hash, a1.hash);
        assert_eq!(a2.seq, 2);
        assert_eq!(verify_chain([&a1, &b1, &a2]), Ok(3));
        let mut forged = a2.clone();
        forged.reasons = vec!["something else".into()];
        assert!(matches!(
            verify_chain([&a1, &b1, &forged]),
            Err(ChainError::Tampered { .. })
        ));
        assert!(matches!(verify_chain([&a2]), Err(ChainError::Gap { .. })));
    }
}
