//! Signed audit checkpoints: the chain head (position, hash, time) signed
//! with the service's Ed25519 key. `verify` checks every checkpoint against
//! the chain, so a chain rewritten from some point (even with every hash
//! recomputed) or cut short is caught, and a checkpoint cannot be forged
//! without the key. The public key is printed by `idgov audit public-key`.

use crate::{App, AppError};
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use idgov_domain::audit::{Action, AuditEntry, ChainBreak, Target, checkpoint_statement};
use idgov_store::{Checkpoint, VerifyReport};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The key file in the data directory (32-byte seed, hex, mode 0600).
pub const KEY_FILE: &str = "audit-signing-key";

/// The service's checkpoint key.
pub struct AuditSigner {
    key: SigningKey,
    /// Names the public key: the first 16 hex digits of its SHA-256.
    pub key_id: String,
}

impl std::fmt::Debug for AuditSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "AuditSigner {{ key_id: {}, key: <redacted> }}",
            self.key_id
        )
    }
}

/// The key file's path in `data_dir`.
pub fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join(KEY_FILE)
}

/// A public key's id.
pub fn key_id(vk: &VerifyingKey) -> String {
    hex::encode(Sha256::digest(vk.as_bytes()))[..16].to_string()
}

impl AuditSigner {
    /// Loads the key of an existing data directory (never makes one).
    pub fn load(data_dir: &Path) -> Result<AuditSigner, String> {
        if !key_path(data_dir).exists() {
            return Err(format!(
                "there is no audit signing key in {} (no {KEY_FILE}); `idgov serve` makes it at its first start: \
                 pass --data-dir (or IDGOV_DATA_DIR) naming the server's data directory",
                data_dir.display()
            ));
        }
        AuditSigner::load_or_create(data_dir)
    }

    /// Loads the key from `data_dir`, creating it (0600) if missing.
    pub fn load_or_create(data_dir: &Path) -> Result<AuditSigner, String> {
        let path = key_path(data_dir);
        let bytes = crate::keyfile::load_or_create(&path, 32)?;
        let seed = <[u8; 32]>::try_from(bytes.as_slice())
            .map_err(|_| format!("{} does not hold a 32-byte Ed25519 seed", path.display()))?;
        let key = SigningKey::from_bytes(&seed);
        Ok(AuditSigner {
            key_id: key_id(&key.verifying_key()),
            key,
        })
    }

    /// The public key, base64 (standard alphabet).
    pub fn public_key(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.key.verifying_key().as_bytes())
    }

    fn sign(&self, statement: &str) -> String {
        base64::engine::general_purpose::STANDARD
            .encode(self.key.sign(statement.as_bytes()).to_bytes())
    }

    /// Why `c` is not a valid checkpoint of this key, if it is not.
    pub fn check(&self, c: &Checkpoint) -> Option<String> {
        if c.key_id != self.key_id {
            return Some(format!(
                "checkpoint {} is signed by key {}, not this service's key {}",
                c.seq,
                idgov_domain::error::echo(&c.key_id),
                self.key_id
            ));
        }
        let sig = base64::engine::general_purpose::STANDARD
            .decode(&c.signature)
            .ok()
            .and_then(|b| <[u8; 64]>::try_from(b.as_slice()).ok())
            .map(|b| Signature::from_bytes(&b));
        let stmt = checkpoint_statement(c.seq, &c.hash, c.signed_at.timestamp_micros());
        match sig {
            Some(s) if self.key.verifying_key().verify(stmt.as_bytes(), &s).is_ok() => None,
            _ => Some(format!(
                "checkpoint {} has no valid signature: it was not made by this service",
                c.seq
            )),
        }
    }
}

impl App {
    /// Gives the app its checkpoint key (once; `serve` does it at start).
    pub fn set_audit_signer(&self, signer: Arc<AuditSigner>) {
        let _ = self.audit_signer.set(signer);
    }

    pub fn audit_signer(&self) -> Option<&Arc<AuditSigner>> {
        self.audit_signer.get()
    }

    /// Signs the chain head now, unless nothing but the previous
    /// checkpoint's own event came after it. Audited (`audit.checkpoint`).
    pub async fn checkpoint_audit(&self) -> Result<Option<Checkpoint>, AppError> {
        let Some(signer) = self.audit_signer.get() else {
            return Ok(None);
        };
        let (seq, hash) = self.store.audit_head().await?;
        let last = self.store.last_checkpoint_seq().await?;
        if seq == 0 || seq <= last + 1 {
            return Ok(None);
        }
        let now = self.now();
        let c = Checkpoint {
            seq,
            signature: signer.sign(&checkpoint_statement(seq, &hash, now.timestamp_micros())),
            hash,
            signed_at: now,
            key_id: signer.key_id.clone(),
        };
        let mut tx = self.store.begin().await?;
        if !tx.insert_checkpoint(&c).await? {
            tx.rollback().await?;
            return Ok(None);
        }
        tx.audit(AuditEntry::new(
            "system:audit",
            Action::AuditCheckpoint,
            Target::Audit,
            json!({"seq": c.seq, "hash": c.hash, "key_id": c.key_id, "signature": c.signature,
                   "signed_at_us": c.signed_at.timestamp_micros()}),
        ));
        tx.commit(now).await?;
        tracing::info!(seq = c.seq, key_id = %c.key_id, "signed an audit checkpoint");
        Ok(Some(c))
    }

    /// Checks every checkpoint against the chain and the key: the first
    /// that fails becomes the report's break (if earlier than the chain's).
    pub(crate) async fn check_checkpoints(
        &self,
        report: &mut VerifyReport,
    ) -> Result<(), AppError> {
        let Some(signer) = self.audit_signer.get() else {
            return Ok(());
        };
        let mut after = 0;
        loop {
            let page = self.store.list_checkpoints(after, 1000).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for c in page {
                report.checkpoints += 1;
                report.last_checkpoint = Some((c.seq, c.signed_at));
                let problem = match signer.check(&c) {
                    Some(p) => Some(p),
                    None => match self.store.audit_hash_at(c.seq).await? {
                        None => Some(format!(
                            "the checkpoint signed at {} names event {}, which is missing: the chain was cut short",
                            c.signed_at.to_rfc3339(),
                            c.seq
                        )),
                        Some(h) if h != c.hash => Some(format!(
                            "event {} no longer has the hash signed at the checkpoint of {}: the chain was rewritten",
                            c.seq,
                            c.signed_at.to_rfc3339()
                        )),
                        Some(_) => None,
                    },
                };
                if let Some(problem) = problem {
                    let earlier = report.broken.as_ref().is_none_or(|b| c.seq < b.seq);
                    if earlier {
                        report.broken = Some(ChainBreak {
                            seq: c.seq,
                            problem,
                        });
                    }
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

/// Checks a checkpoint's signature with a public key (base64, as `idgov
/// audit public-key` prints it): for offline verification of an export.
pub fn verify_with_public_key(
    public_key_b64: &str,
    seq: i64,
    hash: &str,
    signed_at_us: i64,
    signature_b64: &str,
) -> Result<(), String> {
    let b = base64::engine::general_purpose::STANDARD
        .decode(public_key_b64.trim())
        .map_err(|_| "the public key is not base64".to_string())?;
    let key = <[u8; 32]>::try_from(b.as_slice())
        .ok()
        .and_then(|k| VerifyingKey::from_bytes(&k).ok())
        .ok_or("the public key is not an Ed25519 key")?;
    let sig = base64::engine::general_purpose::STANDARD
        .decode(signature_b64)
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b.as_slice()).ok())
        .map(|b| Signature::from_bytes(&b))
        .ok_or("the signature is not an Ed25519 signature")?;
    key.verify(
        checkpoint_statement(seq, hash, signed_at_us).as_bytes(),
        &sig,
    )
    .map_err(|_| format!("the checkpoint of event {seq} is not signed by this key"))
}
