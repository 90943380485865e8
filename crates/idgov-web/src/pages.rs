//! The pages. Each handler: the session, the [`Access`] the one
//! authorization table gives for the matching RPC, the application
//! service, a template. Forms post back and redirect (no script needed).

use crate::session::{Form, Signed, check_form, encode, signed};
use crate::view::{GrantView, Nav, PersonLink, age, bounded, level, why};
use crate::{CSS, JS, WebState, error_page, render};
use askama::Template;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use idgov_app::AppError;
use idgov_app::access::{CreateRequest, RequestView};
use idgov_app::review::ItemDecision;
use idgov_authz::{Access, Role, Rpc, check_rpc};
use idgov_domain::Classification;
use idgov_domain::access::{AccessRequest, RequestState, SECURITY_POOL, StepState, TargetKind};
use idgov_domain::review::{ItemState, ReviewItem, Verdict};
use idgov_domain::roster::ChangeKind;
use idgov_store::{AuditFilter, DirOpState, HeldState, IdentityFilter};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

type St = State<Arc<WebState>>;

pub fn routes() -> Router<Arc<WebState>> {
    Router::new()
        .route("/", get(my_access))
        .route("/people/{id}", get(person_access))
        .route("/reviews", get(reviews))
        .route("/reviews/items/{id}", get(review_item))
        .route("/reviews/decide", post(reviews_decide))
        .route("/reviews/items/{id}/reassign", post(review_reassign))
        .route("/approvals", get(approvals))
        .route("/approvals/{id}", post(approval_decide))
        .route("/request", get(catalog).post(request_create))
        .route("/request/new", get(request_form))
        .route("/requests/{id}", get(request_show))
        .route("/requests/{id}/cancel", post(request_cancel))
        .route("/admin", get(admin))
        .route("/admin/campaigns/{id}", get(admin_campaign))
        .route("/admin/held/{id}", get(held_page).post(admin_held))
        .route("/audit", get(audit))
        .route("/audit/verify", post(audit_verify))
        .route("/audit/campaigns/{id}/evidence", get(evidence))
        .route("/static/idgov.css", get(css))
        .route("/static/idgov.js", get(js))
        .fallback(not_found)
}

/// The access the authorization table gives this person for `rpc`.
fn access(s: &Signed, rpc: Rpc) -> Result<Access, AppError> {
    check_rpc(&s.caller, rpc).map_err(|d| AppError::PermissionDenied(d.reason))
}

/// The session, or the answer that replaces the page.
macro_rules! session {
    ($state:expr, $headers:expr, $path:expr) => {
        match signed(&$state, &$headers, $path).await {
            Ok(s) => s,
            Err(r) => return r,
        }
    };
}

/// The value of a fallible call, or the error page.
macro_rules! try_page {
    ($s:expr, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return error_page(Some(&$s.nav), e),
        }
    };
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        CSS,
    )
        .into_response()
}

async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        JS,
    )
        .into_response()
}

async fn not_found(State(state): St, headers: HeaderMap) -> Response {
    // A gRPC client asking for a method that does not exist gets gRPC's
    // answer, not a page.
    if headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
    {
        return (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "application/grpc"),
                (header::HeaderName::from_static("grpc-status"), "12"),
                (
                    header::HeaderName::from_static("grpc-message"),
                    "unknown%20method",
                ),
            ],
        )
            .into_response();
    }
    let nav = signed(&state, &headers, "/").await.ok().map(|s| s.nav);
    error_page(nav.as_ref(), AppError::PermissionDenied(String::new()))
}

fn redirect(to: &str) -> Response {
    Redirect::to(to).into_response()
}

/// An entitlement's display name from the policy in force.
fn ent_name(state: &WebState, id: &str) -> String {
    state
        .app
        .policy()
        .policy
        .entitlements
        .get(id)
        .map(|e| {
            if e.name.is_empty() {
                e.id.clone()
            } else {
                e.name.clone()
            }
        })
        .unwrap_or_else(|| id.to_string())
}

// ---------------------------------------------------------------- my access

#[derive(Template)]
#[template(path = "access.html")]
struct AccessPage {
    nav: Option<Nav>,
    title: String,
    mine: bool,
    employee_id: String,
    name: String,
    subtitle: String,
    grants: Vec<GrantView>,
    more: bool,
    team: Vec<PersonLink>,
}

async fn my_access(State(state): St, headers: HeaderMap) -> Response {
    let s = session!(state, headers, "/");
    let me = s.session.employee_id.clone();
    access_page(&state, &s, &me, true).await
}

async fn person_access(State(state): St, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let s = session!(state, headers, &format!("/people/{}", encode(&id)));
    let mine = id == s.session.employee_id;
    access_page(&state, &s, &id, mine).await
}

async fn access_page(state: &WebState, s: &Signed, emp: &str, mine: bool) -> Response {
    let a = try_page!(s, access(s, Rpc::GetIdentity));
    let person = try_page!(s, state.app.reachable_identity(&a, emp).await);
    let ga = try_page!(s, access(s, Rpc::ListGrants));
    const PAGE: i64 = 500;
    let rows = try_page!(s, state.app.grants(&ga, emp, false, "", PAGE + 1).await);
    let more = rows.len() as i64 > PAGE;
    let grants = rows
        .iter()
        .take(PAGE as usize)
        .map(|(g, c)| GrantView::new(&s.nav, g, *c, &ent_name(state, &g.entitlement_id)))
        .collect();
    let mut team = Vec::new();
    if mine && let Ok(la) = access(s, Rpc::ListIdentities) {
        let filter = IdentityFilter {
            manager_id: emp.to_string(),
            ..IdentityFilter::default()
        };
        if let Ok(rows) = state.app.identities(&la, filter, "", 200).await {
            team = rows
                .into_iter()
                .map(|(p, n)| PersonLink {
                    name: p.attrs.display_name.clone(),
                    title: p.attrs.title.clone(),
                    employee_id: p.employee_id,
                    grants: n,
                })
                .collect();
        }
    }
    let name = if person.attrs.display_name.is_empty() {
        person.employee_id.clone()
    } else {
        person.attrs.display_name.clone()
    };
    render(&AccessPage {
        nav: Some(s.nav.clone()),
        title: if mine {
            "My access".into()
        } else {
            format!("Access of {name}")
        },
        mine,
        employee_id: person.employee_id.clone(),
        subtitle: [
            person.attrs.title.as_str(),
            person.attrs.department.as_str(),
            &format!("clearance {}", person.attrs.clearance),
            person.status.as_str(),
        ]
        .iter()
        .filter(|x| !x.is_empty())
        .cloned()
        .collect::<Vec<_>>()
        .join(" · "),
        name,
        grants,
        more,
        team,
    })
}

// ---------------------------------------------------------------- reviews

#[derive(Debug, Clone)]
struct ItemView {
    id: String,
    campaign: String,
    entitlement_id: String,
    entitlement_name: String,
    level: String,
    why: String,
    age: String,
    last: String,
    peers: String,
    recommendation: String,
    reason: String,
    certify_needs_why: bool,
    state: String,
    note: String,
    stage: String,
    decided: String,
    justification: String,
}

fn item_view(
    state: &WebState,
    nav: &Nav,
    i: &ReviewItem,
    names: &HashMap<String, String>,
) -> ItemView {
    let now = state.app.now();
    ItemView {
        id: i.id.clone(),
        campaign: names
            .get(&i.campaign_id)
            .cloned()
            .unwrap_or_else(|| i.campaign_id.clone()),
        entitlement_id: i.entitlement_id.clone(),
        entitlement_name: ent_name(state, &i.entitlement_id),
        level: level(i.classification),
        why: why(i.source, &i.source_ref, &i.approvers),
        age: age(i.granted_at, now),
        last: match (i.last_decision, i.last_reviewed_at) {
            (Some(d), Some(t)) => format!("{d} on {}", nav.day(t)),
            (Some(d), None) => d.to_string(),
            _ => "never reviewed".into(),
        },
        peers: if i.peers_total == 0 {
            "no peers with the same department and title".into()
        } else {
            format!("held by {} of {} peers", i.peers_holding, i.peers_total)
        },
        recommendation: i.recommendation.to_string().replace('_', " "),
        reason: i.reason.clone(),
        certify_needs_why: idgov_domain::review::needs_justification(
            Verdict::Certify,
            i.classification,
        ),
        state: i.state.to_string(),
        note: i.note.clone(),
        stage: i.stage.to_string(),
        decided: match (&i.decided_by, i.decided_at) {
            (Some(by), Some(t)) => format!("by {by}, {}", nav.when(t)),
            _ => String::new(),
        },
        justification: i.justification.clone(),
    }
}

#[derive(Debug, Clone)]
struct PersonGroup {
    employee_id: String,
    name: String,
    items: Vec<ItemView>,
}

#[derive(Debug, Clone)]
struct CampaignLine {
    name: String,
    due: String,
    open: usize,
    done: usize,
}

#[derive(Template)]
#[template(path = "reviews.html")]
struct ReviewsPage {
    nav: Option<Nav>,
    title: String,
    csrf: String,
    groups: Vec<PersonGroup>,
    open: usize,
    campaigns: Vec<CampaignLine>,
    done: Vec<ItemView>,
    next: String,
}

#[derive(Deserialize, Default)]
struct PageQuery {
    #[serde(default)]
    after: String,
}

/// The reviewer's queue: open items grouped by person, a page of 500.
async fn reviews(State(state): St, headers: HeaderMap, Query(q): Query<PageQuery>) -> Response {
    let s = session!(state, headers, "/reviews");
    let a = try_page!(s, access(&s, Rpc::ListReviewItems));
    const PAGE: i64 = 500;
    let open = try_page!(
        s,
        state
            .app
            .review_items(
                &a,
                true,
                None,
                Some(ItemState::Open),
                None,
                &q.after,
                PAGE + 1
            )
            .await
    );
    let next = if open.len() as i64 > PAGE {
        open.get(PAGE as usize - 1)
            .map(|i| i.id.clone())
            .unwrap_or_default()
    } else {
        String::new()
    };
    let open: Vec<ReviewItem> = open.into_iter().take(PAGE as usize).collect();
    // Their context is on the page now ("decided without opening" counts
    // decisions on items never shown).
    let shown: Vec<String> = open.iter().map(|i| i.id.clone()).collect();
    if let Err(e) = state.app.items_shown(&shown).await {
        tracing::warn!(error = %e, "cannot record review items as shown");
    }
    // Recently decided and superseded items of the reviewer (one page).
    let mut done_items = Vec::new();
    for st in [
        ItemState::Certified,
        ItemState::Revoked,
        ItemState::Superseded,
    ] {
        if let Ok(rows) = state
            .app
            .review_items(&a, true, None, Some(st), None, "", 50)
            .await
        {
            done_items.extend(rows);
        }
    }
    done_items.sort_by_key(|i| std::cmp::Reverse(i.decided_at));
    done_items.truncate(50);
    // Campaign names and due dates.
    let mut names = HashMap::new();
    let mut lines: BTreeMap<String, CampaignLine> = BTreeMap::new();
    for i in open.iter().chain(done_items.iter()) {
        if !names.contains_key(&i.campaign_id) {
            let (name, due) = match state.app.campaign(&i.campaign_id).await {
                Ok(c) => (c.name.clone(), s.nav.when(c.due_at)),
                Err(_) => (i.campaign_id.clone(), String::new()),
            };
            names.insert(i.campaign_id.clone(), name.clone());
            lines.insert(
                i.campaign_id.clone(),
                CampaignLine {
                    name,
                    due,
                    open: 0,
                    done: 0,
                },
            );
        }
        if let Some(l) = lines.get_mut(&i.campaign_id) {
            if i.state == ItemState::Open {
                l.open += 1;
            } else {
                l.done += 1;
            }
        }
    }
    // Grouped by person, in the order of their names.
    let people: Vec<String> = {
        let mut v: Vec<String> = open.iter().map(|i| i.employee_id.clone()).collect();
        v.sort();
        v.dedup();
        v
    };
    let pa = access(&s, Rpc::GetIdentity).ok();
    let mut groups = Vec::new();
    for p in people {
        let name = match &pa {
            // A reviewer may not reach every subject through GetIdentity
            // (an owner reviews strangers): show the id then.
            Some(pa) => state
                .app
                .reachable_identity(pa, &p)
                .await
                .map(|x| x.attrs.display_name)
                .unwrap_or_default(),
            None => String::new(),
        };
        groups.push(PersonGroup {
            name: if name.is_empty() { p.clone() } else { name },
            items: open
                .iter()
                .filter(|i| i.employee_id == p)
                .map(|i| item_view(&state, &s.nav, i, &names))
                .collect(),
            employee_id: p,
        });
    }
    render(&ReviewsPage {
        nav: Some(s.nav.clone()),
        title: "My reviews".into(),
        csrf: s.nav.csrf.clone(),
        open: open.len(),
        groups,
        campaigns: lines.into_values().collect(),
        done: done_items
            .iter()
            .map(|i| item_view(&state, &s.nav, i, &names))
            .collect(),
        next,
    })
}

#[derive(Template)]
#[template(path = "review_item.html")]
struct ReviewItemPage {
    nav: Option<Nav>,
    title: String,
    csrf: String,
    item: ItemView,
    subject: String,
    open: bool,
}

async fn review_item(State(state): St, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let s = session!(state, headers, &format!("/reviews/items/{}", encode(&id)));
    let a = try_page!(s, access(&s, Rpc::ListReviewItems));
    let i = try_page!(s, state.app.review_item(&a, &id).await);
    if i.state == ItemState::Open
        && let Err(e) = state.app.items_shown(std::slice::from_ref(&i.id)).await
    {
        tracing::warn!(error = %e, "cannot record a review item as shown");
    }
    let mut names = HashMap::new();
    if let Ok(c) = state.app.campaign(&i.campaign_id).await {
        names.insert(c.id.clone(), c.name.clone());
    }
    render(&ReviewItemPage {
        nav: Some(s.nav.clone()),
        title: "Review item".into(),
        csrf: s.nav.csrf.clone(),
        subject: i.employee_id.clone(),
        open: i.state == ItemState::Open,
        item: item_view(&state, &s.nav, &i, &names),
    })
}

/// Hands an item to another reviewer (never its subject), with a reason.
async fn review_reassign(
    State(state): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<Form>,
) -> Response {
    let s = session!(state, headers, "/reviews");
    if let Err(r) = check_form(&headers, &s, &form) {
        return r;
    }
    let a = try_page!(s, access(&s, Rpc::ReassignReviewItem));
    try_page!(
        s,
        state
            .app
            .reassign_item(&a, &id, form.get("to").trim(), form.get("reason"))
            .await
    );
    redirect("/reviews")
}

#[derive(Debug, Clone)]
struct Pending {
    id: String,
    verdict: String,
    justification: String,
    label: String,
}

#[derive(Template)]
#[template(path = "reviews_confirm.html")]
struct ConfirmPage {
    nav: Option<Nav>,
    title: String,
    csrf: String,
    certify: Vec<Pending>,
    revoke: Vec<Pending>,
}

#[derive(Debug, Clone)]
struct Outcome {
    label: String,
    ok: bool,
    message: String,
}

#[derive(Template)]
#[template(path = "reviews_result.html")]
struct ResultPage {
    nav: Option<Nav>,
    title: String,
    outcomes: Vec<Outcome>,
    ok: usize,
    failed: usize,
}

/// Decisions from the queue: fields `v.<item>` (certify / revoke / empty)
/// and `j.<item>` (justification). Without `confirm`, the confirmation
/// page shows what will be certified and revoked; with it, they are
/// decided in one call (each item checked on its own).
async fn reviews_decide(
    State(state): St,
    headers: HeaderMap,
    axum::Form(form): axum::Form<Form>,
) -> Response {
    let s = session!(state, headers, "/reviews");
    if let Err(r) = check_form(&headers, &s, &form) {
        return r;
    }
    let mut pending = Vec::new();
    for (k, v) in &form.0 {
        let Some(id) = k.strip_prefix("v.") else {
            continue;
        };
        if v != "certify" && v != "revoke" {
            continue;
        }
        if pending.iter().any(|p: &Pending| p.id == id) {
            continue;
        }
        pending.push(Pending {
            id: id.to_string(),
            verdict: v.clone(),
            justification: form.get(&format!("j.{id}")).to_string(),
            label: form.get(&format!("l.{id}")).to_string(),
        });
    }
    if pending.is_empty() {
        return error_page(
            Some(&s.nav),
            AppError::invalid(
                "decisions",
                "choose certify or revoke for at least one item",
            ),
        );
    }
    if form.get("confirm") != "yes" {
        let (certify, revoke): (Vec<_>, Vec<_>) =
            pending.into_iter().partition(|p| p.verdict == "certify");
        return render(&ConfirmPage {
            nav: Some(s.nav.clone()),
            title: "Confirm your decisions".into(),
            csrf: s.nav.csrf.clone(),
            certify,
            revoke,
        });
    }
    let a = try_page!(s, access(&s, Rpc::DecideReviewItems));
    let labels: HashMap<String, String> = pending
        .iter()
        .map(|p| {
            (
                p.id.clone(),
                if p.label.is_empty() {
                    p.id.clone()
                } else {
                    p.label.clone()
                },
            )
        })
        .collect();
    let decisions = pending
        .into_iter()
        .map(|p| ItemDecision {
            item_id: p.id,
            verdict: if p.verdict == "revoke" {
                Verdict::Revoke
            } else {
                Verdict::Certify
            },
            justification: p.justification,
        })
        .collect();
    let out = try_page!(s, state.app.decide_items(&a, decisions).await);
    let outcomes: Vec<Outcome> = out
        .into_iter()
        .map(|o| {
            let label = labels.get(&o.item_id).cloned().unwrap_or(o.item_id.clone());
            match o.result {
                Ok(i) => Outcome {
                    label,
                    ok: true,
                    message: i.state.to_string(),
                },
                Err(e) => Outcome {
                    label,
                    ok: false,
                    message: bounded(&problem(&e), 300),
                },
            }
        })
        .collect();
    let ok = outcomes.iter().filter(|o| o.ok).count();
    render(&ResultPage {
        nav: Some(s.nav.clone()),
        title: "Decisions recorded".into(),
        failed: outcomes.len() - ok,
        ok,
        outcomes,
    })
}

/// An error in words for a list of results (not found and not yours alike).
fn problem(e: &AppError) -> String {
    match e {
        AppError::PermissionDenied(_) => "not found".into(),
        AppError::Domain(d) => {
            let mut m = d.message.clone();
            for v in &d.violations {
                m.push_str(&format!("; {}: {}", v.field, v.description));
            }
            m
        }
        _ => "the service could not record it; try again".into(),
    }
}

// ---------------------------------------------------------------- approvals

#[derive(Debug, Clone)]
struct StepView {
    approver: String,
    assignee: String,
    state: String,
    decided: String,
    comment: String,
    note: String,
}

#[derive(Debug, Clone)]
struct RequestLine {
    id: String,
    beneficiary: String,
    requester: String,
    target: String,
    level: String,
    justification: String,
    duration: String,
    state: String,
    created: String,
    expires: String,
    reason: String,
    steps: Vec<StepView>,
    waiting_on: String,
    pending: bool,
}

fn request_line(nav: &Nav, r: &AccessRequest) -> RequestLine {
    RequestLine {
        id: r.id.clone(),
        beneficiary: r.beneficiary.clone(),
        requester: r.requester.clone(),
        target: format!("{} {}", r.target_kind, r.target_id),
        level: level(r.classification),
        justification: r.justification.clone(),
        duration: r
            .duration_days
            .map(|d| format!("{d} days"))
            .unwrap_or_else(|| "no end date".into()),
        state: r.state.to_string(),
        created: nav.when(r.created_at),
        expires: nav.when(r.expires_at),
        reason: r.reason.clone(),
        steps: r
            .steps
            .iter()
            .map(|st| StepView {
                approver: st.approver.to_string(),
                assignee: if st.assignee == SECURITY_POOL {
                    "any security officer".into()
                } else {
                    st.assignee.clone()
                },
                state: st.state.to_string(),
                decided: match (&st.decided_by, st.decided_at) {
                    (Some(b), Some(t)) if st.state != StepState::Open => {
                        format!("{b}, {}", nav.when(t))
                    }
                    _ => String::new(),
                },
                comment: st.comment.clone(),
                note: st.note.clone(),
            })
            .collect(),
        waiting_on: r
            .waiting_on()
            .map(|w| {
                if w == SECURITY_POOL {
                    "any security officer".to_string()
                } else {
                    w.to_string()
                }
            })
            .unwrap_or_default(),
        pending: r.state == RequestState::Pending,
    }
}

#[derive(Template)]
#[template(path = "approvals.html")]
struct ApprovalsPage {
    nav: Option<Nav>,
    title: String,
    csrf: String,
    requests: Vec<RequestLine>,
}

async fn approvals(State(state): St, headers: HeaderMap) -> Response {
    let s = session!(state, headers, "/approvals");
    let a = try_page!(s, access(&s, Rpc::ListAccessRequests));
    let rows = try_page!(
        s,
        state
            .app
            .requests(&a, RequestView::WaitingForMe, None, None, "", 200)
            .await
    );
    render(&ApprovalsPage {
        nav: Some(s.nav.clone()),
        title: "Approvals waiting for me".into(),
        csrf: s.nav.csrf.clone(),
        requests: rows.iter().map(|r| request_line(&s.nav, r)).collect(),
    })
}

async fn approval_decide(
    State(state): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<Form>,
) -> Response {
    let s = session!(state, headers, "/approvals");
    if let Err(r) = check_form(&headers, &s, &form) {
        return r;
    }
    let approve = match form.get("decision") {
        "approve" => true,
        "deny" => false,
        _ => {
            return error_page(
                Some(&s.nav),
                AppError::invalid("decision", "choose approve or deny"),
            );
        }
    };
    let rpc = if approve {
        Rpc::ApproveAccessRequest
    } else {
        Rpc::DenyAccessRequest
    };
    let a = try_page!(s, access(&s, rpc));
    try_page!(
        s,
        state
            .app
            .decide_request(&a, &id, approve, form.get("comment"))
            .await
    );
    redirect(&format!("/requests/{}", encode(&id)))
}

// ---------------------------------------------------------------- requests

#[derive(Debug, Clone)]
struct CatalogEntry {
    kind: String,
    id: String,
    name: String,
    description: String,
    level: String,
    approvals: String,
    max_days: String,
    needs_why: bool,
}

#[derive(Template)]
#[template(path = "catalog.html")]
struct CatalogPage {
    nav: Option<Nav>,
    title: String,
    q: String,
    entries: Vec<CatalogEntry>,
    mine: Vec<RequestLine>,
}

#[derive(Deserialize, Default)]
struct CatalogQuery {
    #[serde(default)]
    q: String,
}

fn needs(state: &WebState, c: Classification) -> (String, String, bool) {
    let policy = state.app.policy();
    let lp = policy.policy.level(c);
    let approvals = if lp.approvals.is_empty() {
        "none".to_string()
    } else {
        lp.approvals
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", then ")
    };
    let max = if lp.max_grant_days == 0 {
        "no limit".to_string()
    } else {
        format!("{} days", lp.max_grant_days)
    };
    (approvals, max, idgov_domain::access::needs_justification(c))
}

fn catalog_entries(state: &WebState, q: &str) -> Vec<CatalogEntry> {
    let policy = state.app.policy();
    let q = q.trim().to_lowercase();
    let hit = |parts: &[&str]| q.is_empty() || parts.iter().any(|p| p.to_lowercase().contains(&q));
    let mut out = Vec::new();
    for e in policy
        .policy
        .entitlements
        .values()
        .filter(|e| e.requestable)
    {
        if !hit(&[&e.id, &e.name, &e.description, &e.system]) {
            continue;
        }
        let (approvals, max_days, needs_why) = needs(state, e.classification);
        out.push(CatalogEntry {
            kind: "entitlement".into(),
            id: e.id.clone(),
            name: if e.name.is_empty() {
                e.id.clone()
            } else {
                e.name.clone()
            },
            description: e.description.clone(),
            level: level(e.classification),
            approvals,
            max_days,
            needs_why,
        });
    }
    for r in policy.policy.roles.values().filter(|r| r.requestable) {
        if !hit(&[&r.id, &r.name]) {
            continue;
        }
        let c = r
            .entitlements
            .iter()
            .filter_map(|e| policy.policy.entitlements.get(e))
            .map(|e| e.classification)
            .max()
            .unwrap_or(Classification::Public);
        let (approvals, max_days, needs_why) = needs(state, c);
        out.push(CatalogEntry {
            kind: "role".into(),
            id: r.id.clone(),
            name: if r.name.is_empty() {
                r.id.clone()
            } else {
                r.name.clone()
            },
            description: format!("role: {}", r.entitlements.join(", ")),
            level: level(c),
            approvals,
            max_days,
            needs_why,
        });
    }
    out.truncate(200);
    out
}

async fn catalog(State(state): St, headers: HeaderMap, Query(q): Query<CatalogQuery>) -> Response {
    let s = session!(state, headers, "/request");
    let a = try_page!(s, access(&s, Rpc::ListAccessRequests));
    let mine = try_page!(
        s,
        state
            .app
            .requests(&a, RequestView::Mine, None, None, "", 50)
            .await
    );
    render(&CatalogPage {
        nav: Some(s.nav.clone()),
        title: "Request access".into(),
        entries: catalog_entries(&state, &q.q),
        q: q.q,
        mine: mine.iter().map(|r| request_line(&s.nav, r)).collect(),
    })
}

#[derive(Template)]
#[template(path = "request_new.html")]
struct RequestForm {
    nav: Option<Nav>,
    title: String,
    csrf: String,
    entry: CatalogEntry,
    beneficiaries: Vec<PersonLink>,
}

#[derive(Deserialize, Default)]
struct NewQuery {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    id: String,
}

async fn request_form(State(state): St, headers: HeaderMap, Query(q): Query<NewQuery>) -> Response {
    let s = session!(state, headers, "/request");
    let Some(entry) = catalog_entries(&state, "")
        .into_iter()
        .find(|e| e.kind == q.kind && e.id == q.id)
    else {
        return error_page(Some(&s.nav), AppError::not_found("not requestable"));
    };
    let mut beneficiaries = vec![PersonLink {
        employee_id: s.session.employee_id.clone(),
        name: format!("{} (me)", s.nav.name),
        title: String::new(),
        grants: 0,
    }];
    if let Ok(la) = access(&s, Rpc::ListIdentities) {
        let filter = IdentityFilter {
            manager_id: s.session.employee_id.clone(),
            ..IdentityFilter::default()
        };
        if let Ok(rows) = state.app.identities(&la, filter, "", 200).await {
            beneficiaries.extend(rows.into_iter().map(|(p, _)| PersonLink {
                name: p.attrs.display_name.clone(),
                title: p.attrs.title.clone(),
                employee_id: p.employee_id,
                grants: 0,
            }));
        }
    }
    render(&RequestForm {
        nav: Some(s.nav.clone()),
        title: format!("Request {}", entry.name),
        csrf: s.nav.csrf.clone(),
        entry,
        beneficiaries,
    })
}

async fn request_create(
    State(state): St,
    headers: HeaderMap,
    axum::Form(form): axum::Form<Form>,
) -> Response {
    let s = session!(state, headers, "/request");
    if let Err(r) = check_form(&headers, &s, &form) {
        return r;
    }
    let target_kind = match form.get("kind") {
        "entitlement" => Some(TargetKind::Entitlement),
        "role" => Some(TargetKind::Role),
        _ => None,
    };
    let duration = form.get("duration_days").trim();
    let duration_days = if duration.is_empty() {
        None
    } else {
        match duration.parse::<u32>() {
            Ok(d) => Some(d),
            Err(_) => {
                return error_page(
                    Some(&s.nav),
                    AppError::invalid("duration_days", "give a whole number of days"),
                );
            }
        }
    };
    let a = try_page!(s, access(&s, Rpc::CreateAccessRequest));
    let r = try_page!(
        s,
        state
            .app
            .create_request(
                &a,
                CreateRequest {
                    beneficiary: form.get("beneficiary").to_string(),
                    target_kind,
                    target_id: form.get("id").to_string(),
                    justification: form.get("justification").to_string(),
                    duration_days,
                    extends_grant_id: None,
                },
            )
            .await
    );
    redirect(&format!("/requests/{}", encode(&r.id)))
}

#[derive(Template)]
#[template(path = "request_show.html")]
struct RequestPage {
    nav: Option<Nav>,
    title: String,
    csrf: String,
    r: RequestLine,
    can_decide: bool,
    can_cancel: bool,
}

async fn request_show(State(state): St, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let s = session!(state, headers, &format!("/requests/{}", encode(&id)));
    let a = try_page!(s, access(&s, Rpc::GetAccessRequest));
    let r = try_page!(s, state.app.request(&a, &id).await);
    let me = s.session.employee_id.as_str();
    let can_decide = r.state == RequestState::Pending
        && r.waiting_on().is_some_and(|w| {
            w == me || (w == SECURITY_POOL && s.caller.roles.contains(&Role::SecurityOfficer))
        });
    let can_cancel = r.state == RequestState::Pending && (r.requester == me || r.beneficiary == me);
    render(&RequestPage {
        nav: Some(s.nav.clone()),
        title: format!("Request {}", r.id),
        csrf: s.nav.csrf.clone(),
        r: request_line(&s.nav, &r),
        can_decide,
        can_cancel,
    })
}

async fn request_cancel(
    State(state): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<Form>,
) -> Response {
    let s = session!(state, headers, "/request");
    if let Err(r) = check_form(&headers, &s, &form) {
        return r;
    }
    let a = try_page!(s, access(&s, Rpc::CancelAccessRequest));
    try_page!(
        s,
        state.app.cancel_request(&a, &id, form.get("reason")).await
    );
    redirect(&format!("/requests/{}", encode(&id)))
}

// ---------------------------------------------------------------- admin

#[derive(Debug, Clone)]
struct CampaignRow {
    id: String,
    name: String,
    state: String,
    started: String,
    due: String,
    items: i64,
}

fn campaign_row(nav: &Nav, c: &idgov_domain::review::Campaign) -> CampaignRow {
    CampaignRow {
        id: c.id.clone(),
        name: c.name.clone(),
        state: c.state.to_string(),
        started: nav.when(c.started_at),
        due: nav.when(c.due_at),
        items: c.items,
    }
}

#[derive(Debug, Clone)]
struct HeldRow {
    id: String,
    kind: String,
    created: String,
    by: String,
    summary: String,
    staged: String,
}

#[derive(Debug, Clone)]
struct Line2 {
    a: String,
    b: String,
    c: String,
    d: String,
}

#[derive(Template)]
#[template(path = "admin.html")]
struct AdminPage {
    nav: Option<Nav>,
    title: String,
    csrf: String,
    can_change: bool,
    campaigns: Vec<CampaignRow>,
    held: Vec<HeldRow>,
    sod: Vec<Line2>,
    failed_ops: Vec<Line2>,
    pending_ops: usize,
    drift: Vec<Line2>,
    drift_run: String,
}

async fn admin(State(state): St, headers: HeaderMap) -> Response {
    let s = session!(state, headers, "/admin");
    try_page!(s, access(&s, Rpc::ListHeldChanges));
    let campaigns = try_page!(s, state.app.campaigns(false, "", 20).await)
        .into_iter()
        .map(|c| campaign_row(&s.nav, &c))
        .collect();
    let held = try_page!(s, state.app.held_changes(HeldState::Held, "", 20).await)
        .into_iter()
        .map(|h| HeldRow {
            id: h.id.clone(),
            kind: h.kind.to_string(),
            created: s.nav.when(h.created_at),
            by: h.created_by.clone(),
            summary: h.summary.clone(),
            staged: bounded(
                &serde_json::to_string_pretty(&h.payload).unwrap_or_default(),
                4000,
            ),
        })
        .collect();
    let sod = try_page!(s, state.app.sod_violations(false, ("", ""), 50).await)
        .into_iter()
        .map(|v| Line2 {
            a: v.employee_id.clone(),
            b: v.rule_id.clone(),
            c: v.severity.to_string(),
            d: format!(
                "{} (since {})",
                v.entitlements.join(", "),
                s.nav.when(v.detected_at)
            ),
        })
        .collect();
    let failed_ops = try_page!(
        s,
        state
            .app
            .directory_ops(Some(DirOpState::Failed), "", 0, 50)
            .await
    )
    .into_iter()
    .map(|o| Line2 {
        a: o.employee_id.clone(),
        b: o.kind.to_string(),
        c: o.group_dn.clone().unwrap_or_default(),
        d: bounded(o.last_error.as_deref().unwrap_or_default(), 300),
    })
    .collect();
    let pending_ops = state
        .app
        .directory_ops(Some(DirOpState::Pending), "", 0, 1001)
        .await
        .map(|v| v.len())
        .unwrap_or(0);
    let (drift_run, drift) = match state.app.drift("", None, 0, 50).await {
        Ok((run, rows)) => (
            run,
            rows.into_iter()
                .map(|r| Line2 {
                    a: r.drift.kind.to_string(),
                    b: r.drift.employee_id.clone().unwrap_or_default(),
                    c: r.drift
                        .group_dn
                        .clone()
                        .or(r.drift.account_dn.clone())
                        .unwrap_or_default(),
                    d: r.action.clone(),
                })
                .collect(),
        ),
        Err(_) => (String::new(), Vec::new()),
    };
    render(&AdminPage {
        nav: Some(s.nav.clone()),
        title: "Administration".into(),
        drift,
        drift_run,
        csrf: s.nav.csrf.clone(),
        can_change: s.nav.admin,
        campaigns,
        held,
        sod,
        failed_ops,
        pending_ops,
    })
}

#[derive(Debug, Clone)]
struct ReviewerRow {
    reviewer: String,
    items: u64,
    open: u64,
    certified: u64,
    revoked: u64,
    completion: String,
    approve_rate: String,
    median: String,
    bulk: u64,
    unopened: u64,
    flag: bool,
}

#[derive(Template)]
#[template(path = "admin_campaign.html")]
struct CampaignPage {
    nav: Option<Nav>,
    title: String,
    c: CampaignRow,
    completion: String,
    by_state: Vec<(String, u64)>,
    reviewers: Vec<ReviewerRow>,
    evidence: bool,
}

fn pct(n: u64, d: u64) -> String {
    if d == 0 {
        "—".into()
    } else {
        format!("{:.0}%", n as f64 * 100.0 / d as f64)
    }
}

async fn admin_campaign(State(state): St, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let s = session!(state, headers, &format!("/admin/campaigns/{}", encode(&id)));
    try_page!(s, access(&s, Rpc::GetCampaignReport));
    let c = try_page!(s, state.app.campaign(&id).await);
    let r = try_page!(s, state.app.campaign_report(&id).await);
    render(&CampaignPage {
        nav: Some(s.nav.clone()),
        title: format!("Campaign {}", c.name),
        completion: pct(r.decided, r.items),
        by_state: r.by_state.clone().into_iter().collect(),
        reviewers: r
            .reviewers
            .iter()
            .map(|x| {
                let decided = x.certified + x.revoked;
                ReviewerRow {
                    reviewer: x.reviewer.clone(),
                    items: x.items,
                    open: x.open,
                    certified: x.certified,
                    revoked: x.revoked,
                    completion: pct(x.items - x.open, x.items),
                    approve_rate: if decided == 0 {
                        "—".into()
                    } else {
                        format!("{:.0}%", x.approve_rate * 100.0)
                    },
                    median: x
                        .median_seconds_per_decision
                        .map(|m| format!("{m:.1} s"))
                        .unwrap_or_else(|| "—".into()),
                    bulk: x.bulk_decisions,
                    unopened: x.decided_without_opening,
                    // Everything approved, fast or unseen: worth a look.
                    flag: decided >= 10
                        && x.approve_rate >= 0.99
                        && (x.median_seconds_per_decision.is_some_and(|m| m < 5.0)
                            || x.decided_without_opening * 2 >= decided),
                }
            })
            .collect(),
        evidence: s.nav.audit,
        c: campaign_row(&s.nav, &c),
    })
}

/// One change of a held roster sync, as a row.
#[derive(Debug, Clone)]
struct ChangeRow {
    employee: String,
    kind: &'static str,
    name: String,
    fields: String,
}

#[derive(Template)]
#[template(path = "held.html")]
struct HeldPage {
    nav: Option<Nav>,
    title: String,
    csrf: String,
    can_change: bool,
    h: HeldRow,
    roster: bool,
    changes: Vec<ChangeRow>,
    total: usize,
    first: usize,
    last: usize,
    prev: String,
    next: String,
}

#[derive(Debug, Deserialize)]
struct FromQuery {
    #[serde(default)]
    from: usize,
}

/// How many changes of a held roster sync a page shows.
const HELD_PAGE: usize = 100;

/// A held change before the decision: a roster sync's changes as a table,
/// a page of [`HELD_PAGE`] at a time (leavers first, the order they would
/// apply in), anything else as staged; and the decision's form.
async fn held_page(
    State(state): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<FromQuery>,
) -> Response {
    let s = session!(state, headers, &format!("/admin/held/{}", encode(&id)));
    try_page!(s, access(&s, Rpc::ListHeldRosterChanges));
    let h = try_page!(s, state.app.held_change(&id).await);
    let roster = h.kind == idgov_domain::guard::HeldKind::RosterSync;
    let (mut changes, mut total) = (Vec::new(), 0);
    if roster && h.state == HeldState::Held {
        let (page, all) = try_page!(
            s,
            state.app.held_roster_changes(&id, q.from, HELD_PAGE).await
        );
        total = all;
        changes = page
            .into_iter()
            .map(|c| ChangeRow {
                employee: c.employee_id,
                kind: match c.kind {
                    ChangeKind::Joiner => "joiner",
                    ChangeKind::Mover => "mover",
                    ChangeKind::Update => "update",
                    ChangeKind::Leaver => "leaver",
                    ChangeKind::Rehire => "rehire",
                    ChangeKind::Withdrawal => "withdrawal",
                },
                name: bounded(&c.display_name, 200),
                fields: bounded(
                    &c.changes
                        .iter()
                        .map(|f| format!("{}: {} → {}", f.field, f.old, f.new))
                        .collect::<Vec<_>>()
                        .join("; "),
                    1000,
                ),
            })
            .collect();
    }
    let first = q.from.min(total);
    let last = first + changes.len();
    let base = format!("/admin/held/{}", encode(&id));
    render(&HeldPage {
        nav: Some(s.nav.clone()),
        title: format!("Held {}", h.kind.to_string().replace('_', " ")),
        csrf: s.nav.csrf.clone(),
        can_change: s.nav.admin && h.state == HeldState::Held,
        roster,
        total,
        first: if changes.is_empty() { first } else { first + 1 },
        last,
        prev: if first > 0 {
            format!("{base}?from={}", first.saturating_sub(HELD_PAGE))
        } else {
            String::new()
        },
        next: if last < total {
            format!("{base}?from={last}")
        } else {
            String::new()
        },
        changes,
        h: HeldRow {
            id: h.id.clone(),
            kind: h.kind.to_string(),
            created: s.nav.when(h.created_at),
            by: h.created_by.clone(),
            summary: format!("{} ({})", h.summary, h.state.as_str()),
            staged: if roster {
                String::new()
            } else {
                bounded(
                    &serde_json::to_string_pretty(&h.payload).unwrap_or_default(),
                    20_000,
                )
            },
        },
    })
}

async fn admin_held(
    State(state): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<Form>,
) -> Response {
    let s = session!(state, headers, "/admin");
    if let Err(r) = check_form(&headers, &s, &form) {
        return r;
    }
    let reason = form.get("reason");
    let actor = s.caller.actor();
    match form.get("decision") {
        "release" => {
            try_page!(s, access(&s, Rpc::ReleaseHeldChange));
            let (id, reason) = (id.clone(), reason.to_string());
            try_page!(
                s,
                idgov_app::to_the_end(&state.app, move |app| async move {
                    app.release_held(&id, &reason, &actor).await
                })
                .await
            );
        }
        "discard" => {
            try_page!(s, access(&s, Rpc::DiscardHeldChange));
            let (id, reason) = (id.clone(), reason.to_string());
            try_page!(
                s,
                idgov_app::to_the_end(&state.app, move |app| async move {
                    app.discard_held(&id, &reason, &actor).await
                })
                .await
            );
        }
        _ => {
            return error_page(
                Some(&s.nav),
                AppError::invalid("decision", "choose release or discard"),
            );
        }
    }
    redirect("/admin")
}

// ---------------------------------------------------------------- audit

#[derive(Debug, Clone)]
struct AuditRow {
    seq: i64,
    when: String,
    actor: String,
    action: String,
    target: String,
    detail: String,
    security: bool,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    nav: Option<Nav>,
    title: String,
    csrf: String,
    actor: String,
    target: String,
    action: String,
    employee: String,
    from: String,
    to: String,
    rows: Vec<AuditRow>,
    next: String,
    verify: String,
    verify_ok: bool,
    campaigns: Vec<CampaignRow>,
}

#[derive(Deserialize, Default)]
struct AuditQuery {
    #[serde(default)]
    actor: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    action: String,
    /// The person the events are about.
    #[serde(default)]
    employee: String,
    /// A day (YYYY-MM-DD) in the viewer's zone: events from its start.
    #[serde(default)]
    from: String,
    /// A day: events up to its end.
    #[serde(default)]
    to: String,
    #[serde(default)]
    after: i64,
}

async fn audit(State(state): St, headers: HeaderMap, Query(q): Query<AuditQuery>) -> Response {
    let s = session!(state, headers, "/audit");
    audit_page(&state, &s, q, String::new(), false).await
}

async fn audit_page(
    state: &WebState,
    s: &Signed,
    q: AuditQuery,
    verify: String,
    verify_ok: bool,
) -> Response {
    try_page!(s, access(s, Rpc::ListAuditEvents));
    let day = |d: &str, end: bool| -> Result<Option<chrono::DateTime<chrono::Utc>>, AppError> {
        let d = d.trim();
        if d.is_empty() {
            return Ok(None);
        }
        let date = chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(|_| {
            AppError::invalid(if end { "to" } else { "from" }, "give a day as YYYY-MM-DD")
        })?;
        let date = if end {
            date.succ_opt().unwrap_or(date)
        } else {
            date
        };
        let local = date.and_hms_opt(0, 0, 0).unwrap_or_default();
        Ok(local
            .and_local_timezone(s.nav.tz)
            .earliest()
            .map(|t| t.with_timezone(&chrono::Utc)))
    };
    let start = try_page!(s, day(&q.from, false));
    let end = try_page!(s, day(&q.to, true));
    let filter = AuditFilter {
        actor: bounded(q.actor.trim(), 256),
        target: bounded(q.target.trim(), 256),
        action: bounded(q.action.trim(), 64),
        subject: bounded(q.employee.trim(), 64),
        start,
        end,
    };
    const PAGE: i64 = 100;
    let rows = try_page!(
        s,
        state.app.audit_events(&filter, q.after.max(0), PAGE).await
    );
    let next = if rows.len() as i64 == PAGE {
        let last = rows.last().map(|r| r.seq).unwrap_or_default();
        format!(
            "/audit?actor={}&target={}&action={}&employee={}&from={}&to={}&after={last}",
            encode(&filter.actor),
            encode(&filter.target),
            encode(&filter.action),
            encode(&filter.subject),
            encode(q.from.trim()),
            encode(q.to.trim())
        )
    } else {
        String::new()
    };
    let campaigns = state
        .app
        .campaigns(false, "", 20)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|c| campaign_row(&s.nav, &c))
        .collect();
    render(&AuditPage {
        nav: Some(s.nav.clone()),
        title: "Audit log".into(),
        csrf: s.nav.csrf.clone(),
        rows: rows
            .into_iter()
            .map(|r| AuditRow {
                seq: r.seq,
                when: s.nav.when(r.occurred_at),
                actor: r.actor,
                action: r.action,
                target: r.target,
                detail: bounded(&r.detail, 400),
                security: r.security,
            })
            .collect(),
        actor: filter.actor,
        target: filter.target,
        action: filter.action,
        employee: filter.subject,
        from: bounded(q.from.trim(), 10),
        to: bounded(q.to.trim(), 10),
        next,
        verify,
        verify_ok,
        campaigns,
    })
}

async fn audit_verify(
    State(state): St,
    headers: HeaderMap,
    axum::Form(form): axum::Form<Form>,
) -> Response {
    let s = session!(state, headers, "/audit");
    if let Err(r) = check_form(&headers, &s, &form) {
        return r;
    }
    try_page!(s, access(&s, Rpc::VerifyAuditChain));
    let r = try_page!(s, state.app.verify_audit(&s.caller.actor()).await);
    let (text, ok) = match &r.broken {
        None => (
            format!(
                "The chain is intact: {} events checked, head {}.",
                r.checked, r.head_hash
            ),
            true,
        ),
        Some(b) => (
            format!("The chain is broken at event {}: {}", b.seq, b.problem),
            false,
        ),
    };
    audit_page(&state, &s, AuditQuery::default(), text, ok).await
}

/// A campaign's evidence as a JSON-lines download (streamed, page by page).
async fn evidence(State(state): St, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let s = session!(state, headers, "/audit");
    try_page!(s, access(&s, Rpc::ExportCampaignEvidence));
    try_page!(s, state.app.campaign(&id).await);
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let app = state.app.clone();
    let cid = id.clone();
    state.app.workers.spawn("evidence export", async move {
        let err_tx = tx.clone();
        if let Err(e) = app.export_evidence(&cid, tx).await {
            let _ = err_tx.send(Err(e)).await;
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        match rx.recv().await {
            Some(Ok(line)) => Some((Ok::<_, std::io::Error>(format!("{line}\n")), rx)),
            Some(Err(e)) => Some((Err(std::io::Error::other(e.to_string())), rx)),
            None => None,
        }
    });
    let safe: String = id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(64)
        .collect();
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/x-ndjson".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"evidence-{safe}.jsonl\""),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}
