//! Cookies, the signed-in session of a request, and the checks every
//! state-changing request passes (CSRF).

use crate::WebState;
use crate::view::Nav;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use idgov_authz::Caller;
use idgov_store::WebSession;
use sha2::{Digest, Sha256};

/// The session cookie's name: `__Host-` prefixed over TLS (then the
/// browser guarantees Secure, Path=/ and no Domain).
pub fn session_cookie(secure: bool) -> &'static str {
    if secure {
        "__Host-idgov-session"
    } else {
        "idgov-session"
    }
}

/// The cookie binding a sign-in under way to the browser that began it.
pub fn login_cookie(secure: bool) -> &'static str {
    if secure {
        "__Host-idgov-login"
    } else {
        "idgov-login"
    }
}

/// A cookie's value from the request, if sent once and plain.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut found = None;
    for v in headers.get_all(header::COOKIE) {
        let Ok(v) = v.to_str() else { continue };
        for part in v.split(';') {
            if let Some((k, val)) = part.trim().split_once('=')
                && k == name
            {
                if found.is_some() {
                    // Two cookies of one name (one planted by a sibling
                    // site): trust neither.
                    return None;
                }
                found = Some(val);
            }
        }
    }
    found
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Lax, Path=/, Secure over TLS;
/// `max_age` 0 deletes it.
pub fn set_cookie(name: &str, value: &str, secure: bool, max_age: Option<i64>) -> HeaderValue {
    let mut s = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax");
    if secure {
        s.push_str("; Secure");
    }
    if let Some(a) = max_age {
        s.push_str(&format!("; Max-Age={a}"));
    }
    HeaderValue::from_str(&s)
        .unwrap_or_else(|_| HeaderValue::from_static("idgov-invalid=; Max-Age=0"))
}

/// The signed-in person of a request.
#[derive(Debug, Clone)]
pub struct Signed {
    pub caller: Caller,
    pub session: WebSession,
    pub nav: Nav,
}

/// The session of a request, or the answer to give instead: a redirect
/// to sign in.
#[allow(clippy::result_large_err)]
pub async fn signed(
    state: &WebState,
    headers: &HeaderMap,
    return_to: &str,
) -> Result<Signed, Response> {
    let Some(id) = cookie(headers, session_cookie(state.secure)) else {
        return Err(to_signin(return_to, None));
    };
    match state.app.web_session(id, state.limits).await {
        Ok(Ok((caller, session))) => {
            let nav = Nav::new(state, &caller, &session, headers).await;
            Ok(Signed {
                caller,
                session,
                nav,
            })
        }
        Ok(Err(why)) => {
            let msg = match why {
                idgov_app::web_sessions::NoSession::Idle => Some("idle"),
                idgov_app::web_sessions::NoSession::Expired => Some("expired"),
                idgov_app::web_sessions::NoSession::Left => Some("ended"),
                _ => None,
            };
            Err(to_signin(return_to, msg))
        }
        Err(e) => Err(crate::error_page(None, e)),
    }
}

fn to_signin(return_to: &str, why: Option<&str>) -> Response {
    let mut url = format!("/signin?next={}", encode(safe_return(return_to)));
    if let Some(w) = why {
        url.push_str(&format!("&why={w}"));
    }
    Redirect::to(&url).into_response()
}

/// A path on this site to return to after sign-in; anything else is `/`.
pub fn safe_return(p: &str) -> &str {
    let ok = p.starts_with('/')
        && !p.starts_with("//")
        && !p.starts_with("/\\")
        && p.len() <= 512
        && p.bytes().all(|b| b.is_ascii_graphic());
    if ok { p } else { "/" }
}

/// Percent-encodes a query value.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The origin checks of a state-changing request: the browser must say it
/// comes from this site (`Sec-Fetch-Site`), or, from older browsers, send
/// an `Origin` naming this host. A request that says neither is refused.
pub fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return matches!(site.to_str(), Ok("same-origin") | Ok("none"));
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin = headers.get(header::ORIGIN).and_then(|h| h.to_str().ok());
    match (host, origin) {
        (Some(h), Some(o)) => {
            let o = o
                .strip_prefix("https://")
                .or_else(|| o.strip_prefix("http://"))
                .unwrap_or("");
            o == h
        }
        _ => false,
    }
}

/// Equal tokens, compared through their hashes (no timing signal).
pub fn token_matches(expected: &str, given: &str) -> bool {
    !expected.is_empty() && Sha256::digest(expected.as_bytes()) == Sha256::digest(given.as_bytes())
}

/// Both CSRF checks of a form posted in a session. (The refusal is the
/// answer itself, returned at once: its size does not matter.)
#[allow(clippy::result_large_err)]
pub fn check_form(headers: &HeaderMap, s: &Signed, form: &Form) -> Result<(), Response> {
    if !same_origin(headers) {
        tracing::warn!(employee_id = %s.session.employee_id, "a cross-site form post was refused");
        return Err(crate::plain(
            axum::http::StatusCode::FORBIDDEN,
            "Refused: this form was not sent from idgov's own pages.",
        ));
    }
    if !token_matches(&s.session.csrf_token, form.get("csrf")) {
        tracing::warn!(employee_id = %s.session.employee_id, "a form post without the session's token was refused");
        return Err(crate::plain(
            axum::http::StatusCode::FORBIDDEN,
            "Refused: the form is out of date or was not made by idgov. Reload the page and try again.",
        ));
    }
    Ok(())
}

/// A posted form (`application/x-www-form-urlencoded`), fields in order.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(transparent)]
pub struct Form(pub Vec<(String, String)>);

impl Form {
    /// The first value of `name` ("" when absent).
    pub fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    /// Every value of `name`.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_host_prefixed_and_secure_over_tls() {
        assert_eq!(session_cookie(true), "__Host-idgov-session");
        let c = set_cookie(session_cookie(true), "abc", true, None);
        let c = c.to_str().unwrap_or_default();
        for part in [
            "__Host-idgov-session=abc",
            "Path=/",
            "HttpOnly",
            "SameSite=Lax",
            "Secure",
        ] {
            assert!(c.contains(part), "{c}");
        }
        assert!(!c.contains("Domain"), "{c}");
        let plain = set_cookie(session_cookie(false), "abc", false, Some(0));
        let plain = plain.to_str().unwrap_or_default();
        assert!(
            plain.starts_with("idgov-session=abc")
                && !plain.contains("Secure")
                && plain.ends_with("Max-Age=0")
        );
    }

    #[test]
    fn only_this_sites_own_pages_may_post() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, HeaderValue::from_static(v));
            }
            m
        };
        assert!(same_origin(&h(&[("sec-fetch-site", "same-origin")])));
        assert!(!same_origin(&h(&[("sec-fetch-site", "same-site")])));
        assert!(!same_origin(&h(&[("sec-fetch-site", "cross-site")])));
        assert!(same_origin(&h(&[
            ("host", "idgov.example.com"),
            ("origin", "https://idgov.example.com")
        ])));
        assert!(!same_origin(&h(&[
            ("host", "idgov.example.com"),
            ("origin", "https://evil.example")
        ])));
        assert!(
            !same_origin(&h(&[("host", "idgov.example.com")])),
            "neither header: refused"
        );
        // Two cookies of one name: trust neither.
        assert_eq!(cookie(&h(&[("cookie", "a=1; a=2")]), "a"), None);
        assert_eq!(safe_return("//evil.example/x"), "/");
        assert_eq!(safe_return("/reviews?after=x"), "/reviews?after=x");
    }
}
