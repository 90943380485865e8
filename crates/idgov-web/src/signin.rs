//! Signing in and out.
//!
//! With an OIDC provider: the authorization code flow with PKCE (S256),
//! `state` and `nonce`, bound to the browser by a cookie and used once; the
//! ID token is verified by `openidconnect` (signature, issuer, audience,
//! expiry, nonce) and its claims are read by the same rules as API tokens
//! (`idgov_authz::read_claims`). A new session id is made at every sign-in.
//!
//! In development mode (no issuer; the service listens on loopback only) a
//! sign-in form takes an employee id and roles, labelled as such on every
//! page.

use crate::session::{
    Form, encode, login_cookie, safe_return, same_origin, session_cookie, set_cookie,
};
use crate::{WebState, error_page, plain, render};
use askama::Template;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine;
use idgov_app::AppError;
use idgov_authz::{Caller, ClaimRules, Role};
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, TokenResponse, reqwest,
};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::RwLock;

/// How people sign in.
pub enum SignIn {
    /// Development mode: pick an employee id (loopback only).
    Dev,
    /// The organisation's OpenID Connect provider.
    Oidc(Box<OidcSignIn>),
    /// An OIDC issuer is configured for the API but the web app has no
    /// client there yet (no `[web]` section): nobody signs in on the web.
    Unconfigured,
}

/// The web app's client at the provider.
pub struct OidcSignIn {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Option<String>,
    pub redirect_url: String,
    pub post_logout_redirect_url: Option<String>,
    pub rules: ClaimRules,
    /// The user claim holds an email, looked up among identities.
    pub user_is_email: bool,
    http: reqwest::Client,
    discovered: RwLock<Option<Discovered>>,
}

#[derive(Clone)]
struct Discovered {
    meta: CoreProviderMetadata,
    end_session: Option<String>,
}

impl OidcSignIn {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        issuer: String,
        client_id: String,
        client_secret: Option<String>,
        redirect_url: String,
        post_logout_redirect_url: Option<String>,
        rules: ClaimRules,
        user_is_email: bool,
    ) -> Result<OidcSignIn, String> {
        let http = reqwest::ClientBuilder::new()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        RedirectUrl::new(redirect_url.clone()).map_err(|e| format!("web.redirect_url: {e}"))?;
        Ok(OidcSignIn {
            issuer,
            client_id,
            client_secret,
            redirect_url,
            post_logout_redirect_url,
            rules,
            user_is_email,
            http,
            discovered: RwLock::new(None),
        })
    }

    /// The provider's metadata, discovered once (and again after a failure).
    async fn discover(&self) -> Result<Discovered, String> {
        if let Some(d) = self.discovered.read().await.clone() {
            return Ok(d);
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        );
        let body = self
            .http
            .get(&url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("OIDC discovery at {url} failed: {e}"))?
            .bytes()
            .await
            .map_err(|e| format!("OIDC discovery at {url} failed: {e}"))?;
        let meta: CoreProviderMetadata = serde_json::from_slice(&body)
            .map_err(|e| format!("the provider's metadata at {url} is not valid: {e}"))?;
        if meta.issuer().as_str().trim_end_matches('/') != self.issuer.trim_end_matches('/') {
            return Err(format!(
                "the provider at {url} names another issuer ({})",
                meta.issuer().as_str()
            ));
        }
        let raw: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let end_session = raw
            .get("end_session_endpoint")
            .and_then(|v| v.as_str())
            .map(String::from);
        // The signing keys are fetched now and again at each discovery.
        let jwks = self
            .http
            .get(meta.jwks_uri().url().as_str())
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("cannot fetch the provider's keys: {e}"))?
            .bytes()
            .await
            .map_err(|e| format!("cannot read the provider's keys: {e}"))?;
        let keys = serde_json::from_slice(&jwks)
            .map_err(|e| format!("the provider's keys are not a JWK set: {e}"))?;
        let d = Discovered {
            meta: meta.set_jwks(keys),
            end_session,
        };
        *self.discovered.write().await = Some(d.clone());
        Ok(d)
    }

    async fn forget(&self) {
        *self.discovered.write().await = None;
    }
}

pub fn routes() -> Router<Arc<WebState>> {
    Router::new()
        .route("/signin", get(signin_page))
        .route("/signin/start", get(start))
        .route("/signin/dev", post(dev_signin))
        .route("/auth/callback", get(callback))
        .route("/signout", post(signout))
}

#[derive(Template)]
#[template(path = "signin.html")]
struct SignInPage {
    dev: bool,
    next: String,
    message: String,
    provider: String,
    /// Development mode: people to pick from (id, name).
    people: Vec<(String, String)>,
}

#[derive(Deserialize, Default)]
struct SignInQuery {
    #[serde(default)]
    next: String,
    #[serde(default)]
    why: String,
}

fn why_text(why: &str) -> String {
    match why {
        "idle" => "You were signed out after a while without activity. Sign in again.",
        "expired" => "Your session reached its time limit. Sign in again.",
        "ended" => "Your session has ended.",
        "signedout" => "You are signed out.",
        _ => "",
    }
    .to_string()
}

async fn signin_page(State(state): State<Arc<WebState>>, Query(q): Query<SignInQuery>) -> Response {
    let (dev, provider, message) = match &state.signin {
        SignIn::Dev => (true, String::new(), why_text(&q.why)),
        SignIn::Oidc(o) => (false, o.issuer.clone(), why_text(&q.why)),
        SignIn::Unconfigured => (
            false,
            String::new(),
            "Web sign-in is not set up on this server: an administrator adds a [web] section \
             (the web app's client at the identity provider) to the --auth file."
                .to_string(),
        ),
    };
    // Development mode picks a person from the store (loopback only:
    // whoever reaches it could mint a token anyway).
    let mut people = Vec::new();
    if dev {
        let reader = Caller {
            subject: "web-dev-signin".into(),
            employee_id: None,
            roles: [Role::Auditor].into_iter().collect(),
            method: "dev".into(),
        };
        if let Ok(a) = idgov_authz::check_rpc(&reader, idgov_authz::Rpc::ListIdentities) {
            let filter = idgov_store::IdentityFilter {
                status: Some(idgov_domain::identity::Status::Active),
                ..Default::default()
            };
            if let Ok(rows) = state.app.identities(&a, filter, "", 200).await {
                people = rows
                    .into_iter()
                    .map(|(p, _)| (p.employee_id, p.attrs.display_name))
                    .collect();
            }
        }
    }
    render(&SignInPage {
        dev,
        next: safe_return(&q.next).to_string(),
        message,
        provider,
        people,
    })
}

fn refused(message: String) -> Response {
    let page = SignInPage {
        dev: false,
        next: "/".into(),
        message,
        provider: String::new(),
        people: Vec::new(),
    };
    let mut r = render(&page);
    *r.status_mut() = StatusCode::FORBIDDEN;
    r
}

/// Begins a sign-in at the provider.
async fn start(State(state): State<Arc<WebState>>, Query(q): Query<SignInQuery>) -> Response {
    let SignIn::Oidc(o) = &state.signin else {
        return Redirect::to("/signin").into_response();
    };
    let d = match o.discover().await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "sign-in: the provider does not answer");
            return refused(
                "The sign-in provider does not answer. Try again in a moment; if it lasts, tell your administrator."
                    .into(),
            );
        }
    };
    let Ok(redirect) = RedirectUrl::new(o.redirect_url.clone()) else {
        return plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "web.redirect_url is invalid",
        );
    };
    let client = CoreClient::from_provider_metadata(
        d.meta,
        ClientId::new(o.client_id.clone()),
        o.client_secret.clone().map(ClientSecret::new),
    )
    .set_redirect_uri(redirect);
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut req = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .set_pkce_challenge(challenge);
    if o.user_is_email {
        req = req.add_scope(Scope::new("email".into()));
    }
    let (url, csrf, nonce) = req.url();
    let secret = match state
        .app
        .begin_web_login(
            csrf.secret(),
            nonce.secret(),
            verifier.secret(),
            safe_return(&q.next),
        )
        .await
    {
        Ok(s) => s,
        Err(e) => return error_page(None, e),
    };
    let mut r = Redirect::to(url.as_str()).into_response();
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(
            login_cookie(state.secure),
            &secret,
            state.secure,
            Some(idgov_app::web_sessions::LOGIN_TTL_MINUTES * 60),
        ),
    );
    r
}

#[derive(Deserialize, Default)]
struct CallbackQuery {
    #[serde(default)]
    code: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

/// Completes a sign-in: the provider sends the browser back here.
async fn callback(
    State(state): State<Arc<WebState>>,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let SignIn::Oidc(o) = &state.signin else {
        return Redirect::to("/signin").into_response();
    };
    let Some(secret) = crate::session::cookie(&headers, login_cookie(state.secure)) else {
        return refused(
            "This sign-in was not begun in this browser, or took too long. Start again.".into(),
        );
    };
    let login = match state.app.take_web_login(secret).await {
        Ok(Some(l)) => l,
        Ok(None) => {
            return refused("This sign-in expired or was already used. Start again.".into());
        }
        Err(e) => return error_page(None, e),
    };
    if !q.error.is_empty() {
        return refused(format!(
            "The provider did not sign you in: {} {}",
            crate::view::bounded(&q.error, 64),
            crate::view::bounded(&q.error_description, 200)
        ));
    }
    if q.code.is_empty() || !crate::session::token_matches(&login.state, &q.state) {
        tracing::warn!("sign-in: the state does not match the sign-in under way");
        return refused("This sign-in answer does not belong to this browser. Start again.".into());
    }
    let (caller, id_token) =
        match complete(o, &state, &q.code, &login.pkce_verifier, &login.nonce).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "sign-in failed");
                return refused(format!("Sign-in failed: {}", crate::view::bounded(&e, 300)));
            }
        };
    finish(&state, &caller, "oidc", &id_token, &login.return_to).await
}

/// Exchanges the code and reads who signed in; with the raw ID token
/// (kept for RP-initiated logout).
async fn complete(
    o: &OidcSignIn,
    state: &WebState,
    code: &str,
    verifier: &str,
    nonce: &str,
) -> Result<(Caller, String), String> {
    let d = o.discover().await?;
    let redirect = RedirectUrl::new(o.redirect_url.clone()).map_err(|e| e.to_string())?;
    let client = CoreClient::from_provider_metadata(
        d.meta,
        ClientId::new(o.client_id.clone()),
        o.client_secret.clone().map(ClientSecret::new),
    )
    .set_redirect_uri(redirect);
    let token = client
        .exchange_code(AuthorizationCode::new(code.to_string()))
        .map_err(|e| format!("the provider has no token endpoint: {e}"))?
        .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_string()))
        .request_async(&o.http)
        .await
        .map_err(|e| format!("the code exchange failed: {e}"))?;
    let id_token = token.id_token().ok_or("the provider sent no ID token")?;
    let verifier = client.id_token_verifier();
    if let Err(e) = id_token.claims(&verifier, &Nonce::new(nonce.to_string())) {
        // A key rotation: discover again next time.
        o.forget().await;
        return Err(format!("the ID token is not valid: {e}"));
    }
    // Verified above: read all its claims by the same rules as API tokens.
    let raw = id_token.to_string();
    let payload = raw.split('.').nth(1).ok_or("the ID token is not a JWT")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| "the ID token's payload is not base64url")?;
    let claims: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes).map_err(|_| "the ID token's payload is not JSON")?;
    let claimed = idgov_authz::read_claims(&o.rules, &claims)?;
    let user = claimed
        .user
        .clone()
        .ok_or("the ID token does not name a person (no user claim)")?;
    let employee_id = if o.user_is_email {
        state
            .app
            .employee_by_email(&user)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("no identity has the email the provider gave")?
    } else {
        user
    };
    idgov_domain::identity::validate_employee_id(&employee_id)
        .map_err(|_| "the provider's user claim is not an employee id".to_string())?;
    let caller = Caller {
        subject: claimed.subject,
        employee_id: Some(employee_id),
        roles: claimed.roles,
        method: "oidc".into(),
    };
    Ok((caller, raw))
}

/// Makes the session and sends the browser on.
async fn finish(
    state: &WebState,
    caller: &Caller,
    method: &str,
    id_token: &str,
    return_to: &str,
) -> Response {
    match state
        .app
        .sign_in(caller, method, id_token, state.limits)
        .await
    {
        Ok((id, _)) => {
            let mut r = Redirect::to(safe_return(return_to)).into_response();
            let h = r.headers_mut();
            h.append(
                header::SET_COOKIE,
                set_cookie(session_cookie(state.secure), &id, state.secure, None),
            );
            h.append(
                header::SET_COOKIE,
                set_cookie(login_cookie(state.secure), "", state.secure, Some(0)),
            );
            r
        }
        Err(AppError::PermissionDenied(m)) => refused(format!("You cannot sign in: {m}")),
        Err(e) => error_page(None, e),
    }
}

/// Development mode: signs in as the employee id given.
async fn dev_signin(
    State(state): State<Arc<WebState>>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<Form>,
) -> Response {
    if !matches!(state.signin, SignIn::Dev) {
        return plain(StatusCode::NOT_FOUND, "Not found");
    }
    if !same_origin(&headers) {
        return plain(
            StatusCode::FORBIDDEN,
            "Refused: this form was not sent from idgov's own pages.",
        );
    }
    let emp = form.get("employee_id").trim().to_string();
    if idgov_domain::identity::validate_employee_id(&emp).is_err() {
        return refused("Give an employee id, e.g. E1001.".into());
    }
    let roles = form
        .all("role")
        .filter_map(|r| r.parse::<Role>().ok())
        .filter(|r| *r != Role::HrFeed)
        .collect();
    let caller = Caller {
        subject: emp.clone(),
        employee_id: Some(emp),
        roles,
        method: "dev".into(),
    };
    finish(&state, &caller, "dev", "", form.get("next")).await
}

/// Signs out: ends the session here, then (with a provider that offers it)
/// at the provider too.
async fn signout(
    State(state): State<Arc<WebState>>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<Form>,
) -> Response {
    let s = match crate::session::signed(&state, &headers, "/").await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if let Err(r) = crate::session::check_form(&headers, &s, &form) {
        return r;
    }
    if let Err(e) = state.app.sign_out(&s.session).await {
        return error_page(Some(&s.nav), e);
    }
    let mut to = "/signin?why=signedout".to_string();
    if let SignIn::Oidc(o) = &state.signin
        && !s.session.id_token.is_empty()
        && let Ok(d) = o.discover().await
        && let Some(end) = d.end_session
    {
        to = format!(
            "{end}?id_token_hint={}&client_id={}",
            encode(&s.session.id_token),
            encode(&o.client_id)
        );
        if let Some(p) = &o.post_logout_redirect_url {
            to.push_str(&format!("&post_logout_redirect_uri={}", encode(p)));
        }
    }
    let mut r = Redirect::to(&to).into_response();
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(session_cookie(state.secure), "", state.secure, Some(0)),
    );
    r
}
