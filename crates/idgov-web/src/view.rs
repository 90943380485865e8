//! What the templates show: view models with everything already in words,
//! dates in the viewer's time zone (named on every page), classification as
//! a colour-and-word badge. Askama escapes every value it prints.

use crate::WebState;
use crate::session::cookie;
use askama::Template;
use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use idgov_authz::{Caller, Role, Rpc, check_rpc};
use idgov_domain::Classification;
use idgov_domain::grant::{Grant, SourceKind};
use idgov_store::WebSession;

/// The cookie the page script sets to the browser's time zone.
pub const TZ_COOKIE: &str = "idgov-tz";

/// The header of every page: who is signed in, what they may open.
#[derive(Debug, Clone)]
pub struct Nav {
    pub employee_id: String,
    pub name: String,
    pub roles: String,
    /// Reads admin pages (it-admin, security officer, auditor).
    pub staff: bool,
    /// Changes things on admin pages (it-admin, security officer).
    pub admin: bool,
    /// Reads the audit log (security officer, auditor).
    pub audit: bool,
    pub csrf: String,
    pub tz: Tz,
    /// Where the zone came from, in words.
    pub tz_note: String,
    /// Signed in through development mode (shown on every page).
    pub dev: bool,
}

impl Nav {
    pub async fn new(
        state: &WebState,
        caller: &Caller,
        session: &WebSession,
        headers: &HeaderMap,
    ) -> Nav {
        let emp = session.employee_id.clone();
        let name = match check_rpc(caller, Rpc::GetIdentity) {
            Ok(a) => state
                .app
                .reachable_identity(&a, &emp)
                .await
                .map(|p| p.attrs.display_name)
                .unwrap_or_default(),
            Err(_) => String::new(),
        };
        let policy_tz = state.app.policy().policy.hr_time_zone;
        let (tz, tz_note) = match cookie(headers, TZ_COOKIE).and_then(|v| {
            let v = v.replace("%2F", "/");
            v.parse::<Tz>().ok()
        }) {
            Some(tz) => (tz, "your browser's time zone".to_string()),
            None => (policy_tz, "the organisation's time zone".to_string()),
        };
        let has = |r: &[Role]| caller.has_any(r);
        Nav {
            name: if name.is_empty() { emp.clone() } else { name },
            employee_id: emp,
            roles: caller
                .roles
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            staff: has(&[Role::ItAdmin, Role::SecurityOfficer, Role::Auditor]),
            admin: has(&[Role::ItAdmin, Role::SecurityOfficer]),
            audit: has(&[Role::SecurityOfficer, Role::Auditor]),
            csrf: session.csrf_token.clone(),
            tz,
            tz_note,
            dev: session.method == "dev",
        }
    }

    /// A moment in the viewer's zone, e.g. `2026-12-14 09:00 CET`.
    pub fn when(&self, t: DateTime<Utc>) -> String {
        t.with_timezone(&self.tz)
            .format("%Y-%m-%d %H:%M %Z")
            .to_string()
    }

    pub fn when_opt(&self, t: Option<DateTime<Utc>>) -> String {
        t.map(|t| self.when(t)).unwrap_or_default()
    }

    /// A day in the viewer's zone.
    pub fn day(&self, t: DateTime<Utc>) -> String {
        t.with_timezone(&self.tz).format("%Y-%m-%d").to_string()
    }
}

/// At most `max` characters of `s` (with an ellipsis when cut).
pub fn bounded(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max).collect();
        out.push('…');
        out
    }
}

/// A classification as the badge shows it: its word (the CSS class is the
/// same word, which gives the colour).
pub fn level(c: Classification) -> String {
    c.to_string()
}

/// Why a grant is held, in words.
pub fn why(source: SourceKind, source_ref: &str, approvers: &[String]) -> String {
    match source {
        SourceKind::Birthright => format!("birthright of role {source_ref}"),
        SourceKind::Request => {
            if approvers.is_empty() {
                format!("requested ({source_ref}), granted without approval")
            } else {
                format!(
                    "requested ({source_ref}), approved by {}",
                    approvers.join(", ")
                )
            }
        }
        SourceKind::Imported => "imported from the directory".to_string(),
        SourceKind::Exception => {
            format!("allowed by a separation-of-duties exception {source_ref}")
                .trim()
                .to_string()
        }
    }
}

/// Days between two moments, in words.
pub fn age(from: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let d = (now - from).num_days();
    match d {
        ..=0 => "today".into(),
        1 => "1 day".into(),
        d if d < 60 => format!("{d} days"),
        d if d < 730 => format!("{} months", d / 30),
        d => format!("{} years", d / 365),
    }
}

/// A grant as the access pages show it.
#[derive(Debug, Clone)]
pub struct GrantView {
    pub id: String,
    pub entitlement_id: String,
    pub entitlement_name: String,
    pub level: String,
    pub why: String,
    pub since: String,
    pub until: String,
    pub review_pending: bool,
}

impl GrantView {
    pub fn new(nav: &Nav, g: &Grant, c: Classification, name: &str) -> GrantView {
        GrantView {
            id: g.id.clone(),
            entitlement_id: g.entitlement_id.clone(),
            entitlement_name: name.to_string(),
            level: level(c),
            why: why(g.source, &g.source_ref, &g.approvers),
            since: nav.day(g.granted_at),
            until: g
                .expires_at
                .map(|t| nav.when(t))
                .unwrap_or_else(|| "no end date".into()),
            review_pending: g.review_pending,
        }
    }
}

/// A person linked from a page.
#[derive(Debug, Clone)]
pub struct PersonLink {
    pub employee_id: String,
    pub name: String,
    pub title: String,
    pub grants: i64,
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub nav: Option<Nav>,
    pub title: &'static str,
    pub message: String,
}
