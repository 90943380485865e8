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
//! A missing component skips a test locally with a loud message, and fails
//! it when `IDGOV_REQUIRE_INTEGRATION=1` (set by `.ci/run`): CI never skips.

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

/// True when integration tests must not be skipped (CI).
pub fn integration_required() -> bool {
    std::env::var("IDGOV_REQUIRE_INTEGRATION").is_ok_and(|v| v == "1" || v == "true")
}

/// Skips (locally) or fails (in CI) a test whose fixture is missing.
pub fn skip_or_fail(what: &str, why: &str) {
    if integration_required() {
        panic!("{what} is required (IDGOV_REQUIRE_INTEGRATION=1) but unavailable: {why}");
    }
    eprintln!(
        "SKIPPED: {what} unavailable ({why}); set IDGOV_REQUIRE_INTEGRATION=1 to make this a failure"
    );
}
