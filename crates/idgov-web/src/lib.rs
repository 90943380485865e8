//! idgov's web app for people, served on the same port as the gRPC API.
//!
//! An adapter like the gRPC one: every page calls the application services
//! of `idgov-app` with an [`idgov_authz::Access`] decided by the one
//! authorization table, never the store. A page about somebody else's
//! item, request or person answers 404 exactly like one that does not
//! exist.
//!
//! - [`session`]: cookies, sessions, the CSRF checks of every form;
//! - [`signin`]: OpenID Connect sign-in (code + PKCE, state, nonce), the
//!   development-mode sign-in, sign-out;
//! - [`pages`]: the pages (my access, reviews, approvals, requests, admin,
//!   audit);
//! - [`view`]: what the templates show (dates in the viewer's zone,
//!   classification badges, reasons in words).

pub mod pages;
pub mod session;
pub mod signin;
pub mod view;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use idgov_app::web_sessions::SessionLimits;
use idgov_app::{App, AppError};
use idgov_domain::ErrorCode;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The `[web]` section of the authentication file: the web app's client at
/// the OIDC provider, and how long sessions last.
///
/// ```toml
/// [web]
/// client_id = "idgov-web"
/// client_secret_file = "web-client-secret"   # relative to the auth file
/// redirect_url = "https://idgov.example.com/auth/callback"
/// idle_minutes = 30
/// absolute_hours = 12
/// secure_cookies = true   # default: on over TLS or with an https redirect_url
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    pub client_id: String,
    /// A file holding the client secret (none: a public client with PKCE).
    pub client_secret_file: Option<PathBuf>,
    /// Where the provider sends the browser back: this server's
    /// `/auth/callback`.
    pub redirect_url: String,
    #[serde(default = "default_idle")]
    pub idle_minutes: u32,
    #[serde(default = "default_absolute")]
    pub absolute_hours: u32,
    /// Where the provider sends the browser after signing out there
    /// (RP-initiated logout); it must be registered at the provider.
    pub post_logout_redirect_url: Option<String>,
    /// Cookies `Secure` with the `__Host-` prefix. Defaults to on when
    /// idgov itself speaks TLS; set it when a TLS-terminating proxy is in
    /// front (an https `redirect_url` turns it on too).
    pub secure_cookies: Option<bool>,
}

fn default_idle() -> u32 {
    30
}
fn default_absolute() -> u32 {
    12
}

impl WebConfig {
    /// Checks the section; relative paths are read from `dir`.
    pub fn check(&mut self, dir: &Path) -> Result<(), String> {
        if self.client_id.trim().is_empty() {
            return Err("web.client_id is required".into());
        }
        let r = &self.redirect_url;
        if !(r.starts_with("https://")
            || r.starts_with("http://127.0.0.1")
            || r.starts_with("http://localhost"))
        {
            return Err(format!(
                "web.redirect_url {r:?} must be https:// (http only on loopback)"
            ));
        }
        if !r.ends_with("/auth/callback") {
            return Err(format!(
                "web.redirect_url {r:?} must end with /auth/callback (the page that completes sign-in)"
            ));
        }
        if self.idle_minutes == 0 || self.idle_minutes > 24 * 60 {
            return Err("web.idle_minutes must be between 1 and 1440".into());
        }
        if self.absolute_hours == 0 || self.absolute_hours > 7 * 24 {
            return Err("web.absolute_hours must be between 1 and 168".into());
        }
        if let Some(p) = &mut self.client_secret_file
            && p.is_relative()
        {
            *p = dir.join(&p);
        }
        Ok(())
    }

    /// Whether cookies are `Secure` (`__Host-`), given whether idgov's own
    /// listener speaks TLS.
    pub fn secure(&self, tls: bool) -> bool {
        self.secure_cookies
            .unwrap_or(tls || self.redirect_url.starts_with("https://"))
    }

    pub fn limits(&self) -> SessionLimits {
        SessionLimits {
            idle: chrono::Duration::minutes(i64::from(self.idle_minutes)),
            absolute: chrono::Duration::hours(i64::from(self.absolute_hours)),
        }
    }
}

/// What the web adapter needs.
pub struct WebState {
    pub app: Arc<App>,
    pub signin: signin::SignIn,
    /// Cookies are `Secure` (and `__Host-` prefixed): the listener speaks TLS.
    pub secure: bool,
    pub limits: SessionLimits,
}

impl std::fmt::Debug for WebState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebState")
            .field("secure", &self.secure)
            .finish_non_exhaustive()
    }
}

/// The web app's routes. Every response carries the security headers.
pub fn router(state: Arc<WebState>) -> Router {
    let csp = Arc::new(content_security_policy(&state.signin));
    pages::routes()
        .merge(signin::routes())
        .with_state(state)
        .layer(axum::middleware::map_response_with_state(
            csp,
            security_headers,
        ))
}

/// The Content-Security-Policy: only our own CSS and script, forms posted
/// to this site only — and, with a provider, to it too: sign-out's form
/// continues to the provider's end-session page, and `form-action` also
/// governs where a form's redirects may lead.
fn content_security_policy(signin: &signin::SignIn) -> HeaderValue {
    let provider = match signin {
        signin::SignIn::Oidc(o) => url_origin(&o.issuer),
        _ => None,
    };
    let form = match provider {
        Some(p) => format!("'self' {p}"),
        None => "'self'".to_string(),
    };
    HeaderValue::from_str(&format!(
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
         form-action {form}; frame-ancestors 'none'; base-uri 'none'"
    ))
    .unwrap_or_else(|_| {
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        )
    })
}

/// `scheme://host[:port]` of a URL, if it has one.
fn url_origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split('/').next()?;
    let ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    ok.then(|| format!("{scheme}://{host}"))
}

/// The CSS and script, built in (no build step, nothing fetched).
pub const CSS: &str = include_str!("../static/idgov.css");
pub const JS: &str = include_str!("../static/idgov.js");

/// Strict headers on every answer: nothing but our own CSS and script runs,
/// no framing, no sniffing, no referrer leaves the site, no caching of
/// pages about people.
async fn security_headers(
    axum::extract::State(csp): axum::extract::State<Arc<HeaderValue>>,
    mut resp: Response,
) -> Response {
    let h = resp.headers_mut();
    let set = |h: &mut axum::http::HeaderMap, k: header::HeaderName, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    h.insert(header::CONTENT_SECURITY_POLICY, (*csp).clone());
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(h, header::REFERRER_POLICY, "no-referrer");
    set(
        h,
        header::HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        set(h, header::CACHE_CONTROL, "no-store");
    }
    resp
}

/// Renders a template into a page.
pub fn render<T: askama::Template>(t: &T) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a page failed to render");
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The page could not be shown; the error is in the service's log.",
            )
        }
    }
}

/// A short plain-text answer.
pub fn plain(status: StatusCode, text: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

/// The one place the web adapter turns application errors into pages.
/// Not found and not yours answer the same 404 page, byte for byte.
pub fn error_page(nav: Option<&view::Nav>, e: AppError) -> Response {
    let (status, title, message) = match &e {
        AppError::PermissionDenied(_) => (StatusCode::NOT_FOUND, "Not found", String::new()),
        AppError::Domain(d) => match d.code {
            ErrorCode::NotFound | ErrorCode::PermissionDenied => {
                (StatusCode::NOT_FOUND, "Not found", String::new())
            }
            ErrorCode::InvalidArgument | ErrorCode::InvalidPolicy => {
                let mut m = d.message.clone();
                for v in &d.violations {
                    m.push_str(&format!("\n{}: {}", v.field, v.description));
                }
                (
                    StatusCode::BAD_REQUEST,
                    "Not done: the input needs a fix",
                    m,
                )
            }
            ErrorCode::FailedPrecondition | ErrorCode::IdempotencyConflict => {
                (StatusCode::CONFLICT, "Not done", d.message.clone())
            }
        },
        AppError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "Sign in again", String::new()),
        AppError::GoesOnLater(m) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "The service is stopping",
            format!("{m}. Its result shows here once the service is back."),
        ),
        AppError::Store(_) | AppError::Unavailable(_) => {
            tracing::error!(error = %e, "a page failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "The service cannot answer right now",
                "Try again in a moment; if it lasts, tell your administrator.".to_string(),
            )
        }
    };
    let page = view::ErrorPage {
        nav: nav.cloned(),
        title,
        message: view::bounded(&message, 2000),
    };
    let mut r = render(&page);
    *r.status_mut() = status;
    r
}
