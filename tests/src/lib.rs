//! idgov's test kit: real components as fixtures.
//!
//! - [`pg`]: a private PostgreSQL cluster per test process, started from the
//!   installed binaries, with a fresh database per test;
//! - [`backends`]: open a store on SQLite or PostgreSQL by name, so one suite
//!   runs against both;
//! - [`server`]: an in-process idgov server on a random port with a
//!   controllable clock;
//! - [`slapd`]: a private OpenLDAP instance per test, with ppolicy;
//! - [`proxy`]: a TCP proxy that turns open connections into black holes;
//! - [`oidc`]: a real OpenID Connect provider (npm `oidc-provider`) with
//!   keys the tests rotate;
//! - [`browser`]: headless Debian chromium through chromium-driver.
//!
//! A missing component fails the test with the instruction to install it,
//! unless `IDGOV_SKIP_MISSING=1` opts out explicitly (then it is skipped
//! with a loud message); CI (`IDGOV_REQUIRE_INTEGRATION=1`) never skips.

// Test code: a fixture that cannot start must fail the test loudly.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

pub mod backends;
pub mod browser;
pub mod oidc;
pub mod pg;
pub mod proxy;
pub mod server;
pub mod slapd;

/// A TCP port on 127.0.0.1 that was free a moment ago, for a fixture to
/// listen on.
pub fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// True when a test whose component is missing must fail: always, unless
/// `IDGOV_SKIP_MISSING=1` opts out explicitly (CI also sets
/// `IDGOV_REQUIRE_INTEGRATION=1`, which wins).
pub fn integration_required() -> bool {
    let set = |k: &str| std::env::var(k).is_ok_and(|v| v == "1" || v == "true");
    set("IDGOV_REQUIRE_INTEGRATION") || !set("IDGOV_SKIP_MISSING")
}

/// Fails a test whose fixture is missing, saying how to install it or to
/// opt out; with the opt-out, skips it with a loud message.
pub fn skip_or_fail(what: &str, why: &str) {
    if integration_required() {
        panic!(
            "{what} is needed by this test but unavailable: {why}. Install it (scripts/test installs \
             everything the tests need), or set IDGOV_SKIP_MISSING=1 to skip the tests that need it"
        );
    }
    eprintln!("SKIPPED (IDGOV_SKIP_MISSING=1): {what} unavailable ({why}); this test did not run");
}
