//! Campaign evidence: what an export holds and how it is checked offline.
//!
//! An export is JSON lines: a manifest, the campaign, the policy in force
//! at its start, the contiguous segment of the audit chain from the
//! campaign's start to the head when exported, and every review item.
//! [`Checker`] verifies that the segment chains to the head the manifest
//! names, that the item count is the one recorded (in the chain) at start,
//! and that every decision is backed by the audit event that recorded it.

use crate::audit::AuditRecord;
use crate::review::{Campaign, ItemState, ReviewItem};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// The format of an export.
pub const FORMAT: &str = "idgov-campaign-evidence/1";

/// The controls a campaign's evidence supports.
pub const CONTROLS: &[&str] = &[
    "ISO/IEC 27001:2022 A.5.15 Access control",
    "ISO/IEC 27001:2022 A.5.18 Access rights (review of access rights)",
    "ISO/IEC 27001:2022 A.8.2 Privileged access rights",
    "Customer security annex 3.4 (formal user access provisioning and review)",
    "Customer security annex 3.7 (physical access rights reviewed annually)",
];

/// The first line of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub campaign_id: String,
    pub generated_at: String,
    pub policy_version: i64,
    pub controls: Vec<String>,
    pub items: u64,
    pub audit_events: u64,
    /// The first audit event exported (the campaign's start).
    pub first_seq: i64,
    /// The chain head when exported: the last event exported.
    pub head_seq: i64,
    pub head_hash: String,
}

/// One line of an export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Line {
    Manifest(Manifest),
    Campaign(Box<Campaign>),
    Policy {
        version: i64,
        sha256: String,
        document: String,
    },
    Audit(AuditRecord),
    Item(Box<ReviewItem>),
}

/// What a passing check found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub campaign_id: String,
    pub items: u64,
    pub decisions: u64,
    pub audit_events: u64,
    pub head_seq: i64,
    pub head_hash: String,
}

/// The audit action that records an item's state, if any must exist.
fn action_for(item: &ReviewItem) -> Option<&'static str> {
    let by_default = item
        .decided_by
        .as_deref()
        .is_some_and(|d| d.starts_with("system:"));
    match item.state {
        ItemState::Open => None,
        ItemState::Superseded => Some("review.superseded"),
        ItemState::Kept | ItemState::Flagged => Some("review.defaulted"),
        ItemState::Revoked if by_default => Some("review.defaulted"),
        ItemState::Revoked => Some("review.revoked"),
        ItemState::Certified => Some("review.certified"),
    }
}

/// Checks an export fed line by line.
#[derive(Debug, Default)]
pub struct Checker {
    manifest: Option<Manifest>,
    campaign: Option<Campaign>,
    next_seq: i64,
    prev_hash: Option<String>,
    audit: u64,
    started_items: Option<u64>,
    /// The last recording event of each item: (action, detail).
    recorded: HashMap<String, (String, serde_json::Value)>,
    items: u64,
    decisions: u64,
    seen_items: HashMap<String, ()>,
    problems: Vec<String>,
}

impl Checker {
    pub fn new() -> Checker {
        Checker::default()
    }

    fn problem(&mut self, p: String) {
        if self.problems.len() < 50 {
            self.problems.push(p);
        }
    }

    /// Feeds line `n` (1-based, for messages).
    pub fn line(&mut self, n: usize, line: Line) {
        match line {
            Line::Manifest(m) => {
                if n != 1 || self.manifest.is_some() {
                    self.problem(format!("line {n}: a second manifest"));
                }
                if m.format != FORMAT {
                    self.problem(format!(
                        "line {n}: unknown format {:?} (expected {FORMAT})",
                        m.format
                    ));
                }
                self.next_seq = m.first_seq;
                self.manifest = Some(m);
            }
            _ if self.manifest.is_none() => {
                self.problem(format!("line {n}: the manifest must come first"));
            }
            Line::Campaign(c) => self.campaign = Some(*c),
            Line::Policy { .. } => {}
            Line::Audit(r) => self.audit_line(n, r),
            Line::Item(i) => self.item_line(n, *i),
        }
    }

    fn audit_line(&mut self, n: usize, r: AuditRecord) {
        if self.items > 0 {
            self.problem(format!("line {n}: audit event {} after the items", r.seq));
        }
        if r.seq != self.next_seq {
            self.problem(format!(
                "line {n}: expected audit event {}, found {} (events missing or reordered)",
                self.next_seq, r.seq
            ));
        }
        if let Some(prev) = &self.prev_hash
            && &r.prev_hash != prev
        {
            self.problem(format!(
                "line {n}: audit event {} does not link to its predecessor",
                r.seq
            ));
        }
        if r.computed_hash() != r.hash {
            self.problem(format!(
                "line {n}: audit event {} was altered: its content does not match its hash",
                r.seq
            ));
        }
        self.next_seq = r.seq + 1;
        self.prev_hash = Some(r.hash.clone());
        self.audit += 1;
        let campaign_id = self
            .manifest
            .as_ref()
            .map(|m| m.campaign_id.clone())
            .unwrap_or_default();
        let detail: serde_json::Value = serde_json::from_str(&r.detail).unwrap_or_default();
        if r.action == "campaign.started" && r.target == format!("campaign:{campaign_id}") {
            self.started_items = detail["items"].as_u64();
        }
        if let Some(item) = r.target.strip_prefix("review_item:")
            && detail["campaign"] == serde_json::json!(campaign_id)
            && r.action.starts_with("review.")
            && r.action != "review.reassigned"
            && r.action != "review.stage_certified"
        {
            self.recorded
                .insert(item.to_string(), (r.action.clone(), detail));
        }
    }

    fn item_line(&mut self, n: usize, i: ReviewItem) {
        self.items += 1;
        let campaign_id = self
            .manifest
            .as_ref()
            .map(|m| m.campaign_id.clone())
            .unwrap_or_default();
        if i.campaign_id != campaign_id {
            self.problem(format!(
                "line {n}: item {} belongs to campaign {}",
                i.id, i.campaign_id
            ));
        }
        if self.seen_items.insert(i.id.clone(), ()).is_some() {
            self.problem(format!("line {n}: item {} appears twice", i.id));
        }
        let Some(want) = action_for(&i) else {
            return;
        };
        self.decisions += 1;
        match self.recorded.get(&i.id) {
            None => self.problem(format!(
                "line {n}: item {} is {} but no audit event records it",
                i.id, i.state
            )),
            Some((action, detail)) => {
                let mut wrong = Vec::new();
                if action != want {
                    wrong.push(format!("the audit says {action}"));
                }
                if want == "review.defaulted" && detail["outcome"] != serde_json::json!(i.state) {
                    wrong.push(format!("the audit says outcome {}", detail["outcome"]));
                }
                if (want == "review.certified" || want == "review.revoked")
                    && detail["justification"] != serde_json::json!(i.justification)
                {
                    wrong.push("the justification differs from the audit".into());
                }
                if detail["grant"] != serde_json::json!(i.grant_id)
                    || detail["employee"] != serde_json::json!(i.employee_id)
                {
                    wrong.push("the grant or person differs from the audit".into());
                }
                if !wrong.is_empty() {
                    self.problem(format!(
                        "line {n}: item {} ({}) was altered: {}",
                        i.id,
                        i.state,
                        wrong.join("; ")
                    ));
                }
            }
        }
    }

    /// The verdict once every line was fed.
    pub fn finish(mut self) -> Result<Summary, Vec<String>> {
        let Some(m) = self.manifest.clone() else {
            return Err(vec![
                "no manifest: this is not a campaign evidence export".into(),
            ]);
        };
        if self.campaign.as_ref().map(|c| c.id.as_str()) != Some(m.campaign_id.as_str()) {
            self.problem("the campaign record is missing or names another campaign".into());
        }
        if self.audit != m.audit_events {
            self.problem(format!(
                "{} audit events exported, the manifest says {}",
                self.audit, m.audit_events
            ));
        }
        if self.next_seq - 1 != m.head_seq
            || self.prev_hash.as_deref() != Some(m.head_hash.as_str())
        {
            self.problem(format!(
                "the audit segment does not end at the head the manifest names (event {} {})",
                m.head_seq,
                short(&m.head_hash)
            ));
        }
        match self.started_items {
            None => self.problem("the audit event that started the campaign is missing".into()),
            Some(k) if k != self.items => self.problem(format!(
                "{} items exported, the campaign started with {k} (items dropped or added)",
                self.items
            )),
            Some(_) => {}
        }
        if self.items != m.items {
            self.problem(format!(
                "{} items exported, the manifest says {}",
                self.items, m.items
            ));
        }
        let missing: Vec<String> = self
            .recorded
            .keys()
            .filter(|k| !self.seen_items.contains_key(*k))
            .take(5)
            .cloned()
            .collect();
        for k in missing {
            self.problem(format!(
                "item {k} has audit events but is missing from the export"
            ));
        }
        if self.problems.is_empty() {
            Ok(Summary {
                campaign_id: m.campaign_id,
                items: self.items,
                decisions: self.decisions,
                audit_events: self.audit,
                head_seq: m.head_seq,
                head_hash: m.head_hash,
            })
        } else {
            Err(self.problems)
        }
    }
}

fn short(h: &str) -> &str {
    h.get(..12).unwrap_or(h)
}
