//! A real OpenID Connect provider (panva `oidc-provider`, `tests/oidc/`) on a
//! random loopback port, owned by a watchdog like the other fixtures. Keys
//! are generated per instance; [`Provider::rotate`] restarts it with new ones.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const WATCHDOG: &str = r#"
node "$DIR_OIDC/provider.mjs" >>"$LOG" 2>&1 &
N=$!
trap 'kill -TERM "$N" 2>/dev/null; wait "$N"; exit 0' TERM INT
while [ -d "/proc/$OWNER" ] && kill -0 "$N" 2>/dev/null; do sleep 0.2; done
kill -TERM "$N" 2>/dev/null
wait "$N"
"#;

fn oidc_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("oidc")
}

/// A signing key of the provider: its id, algorithm and private key (PEM).
#[derive(Debug, Clone)]
pub struct Key {
    pub kid: String,
    pub alg: String,
    pub pem: String,
    pub jwk: serde_json::Value,
}

pub struct Provider {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    pub keys: Vec<Key>,
    ttl: u64,
}

/// True when the provider can run here (node and `npm ci` done).
pub fn available() -> Result<(), String> {
    if !oidc_dir().join("node_modules/oidc-provider").exists() {
        return Err("tests/oidc/node_modules is missing (run: cd tests/oidc && npm ci)".into());
    }
    Command::new("node")
        .arg("--version")
        .output()
        .map_err(|e| format!("node is not installed: {e}"))?;
    Ok(())
}

impl Provider {
    /// Starts a provider signing with a new key `kid` (`alg`: RS256, ES256,
    /// EdDSA); `groups` gives users their `groups` claim; access tokens live
    /// `ttl` seconds. `None` (after [`crate::skip_or_fail`]) when unavailable.
    pub fn start(
        kid: &str,
        alg: &str,
        groups: &BTreeMap<&str, Vec<&str>>,
        ttl: u64,
    ) -> Option<Provider> {
        if let Err(e) = available() {
            crate::skip_or_fail("the OIDC provider", &e);
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(
            dir.path().join("groups.json"),
            serde_json::to_string(groups).expect("json"),
        )
        .expect("groups");
        let port = crate::free_port().expect("a free port");
        let mut p = Provider {
            port,
            dir,
            child: None,
            keys: vec![],
            ttl,
        };
        let key = p.new_key(kid, alg);
        p.keys = vec![key];
        p.run();
        Some(p)
    }

    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Makes a key (not yet published).
    pub fn new_key(&self, kid: &str, alg: &str) -> Key {
        let file = self.dir.path().join(format!("{kid}.json"));
        let out = Command::new("node")
            .arg(oidc_dir().join("make-keys.mjs"))
            .arg(&file)
            .arg(kid)
            .arg(alg)
            .output()
            .expect("node runs");
        assert!(
            out.status.success(),
            "make-keys: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let jwk: Vec<serde_json::Value> =
            serde_json::from_str(&std::fs::read_to_string(&file).expect("key")).expect("jwk");
        Key {
            kid: kid.into(),
            alg: alg.into(),
            pem: std::fs::read_to_string(format!("{}.pem", file.display())).expect("pem"),
            jwk: jwk.into_iter().next().expect("one key"),
        }
    }

    fn run(&mut self) {
        let keys: Vec<&serde_json::Value> = self.keys.iter().map(|k| &k.jwk).collect();
        let keys_file = self.dir.path().join("keys.json");
        std::fs::write(&keys_file, serde_json::to_string(&keys).expect("json")).expect("keys");
        let child = Command::new("/bin/sh")
            .arg("-c")
            .arg(WATCHDOG)
            .env("DIR_OIDC", oidc_dir())
            .env("LOG", self.dir.path().join("provider.log"))
            .env("OWNER", std::process::id().to_string())
            .env("PORT", self.port.to_string())
            .env("KEYS_FILE", &keys_file)
            .env("GROUPS_FILE", self.dir.path().join("groups.json"))
            .env("TOKEN_TTL", self.ttl.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("provider starts");
        self.child = Some(child);
        let t = Instant::now();
        let url = format!("{}/.well-known/openid-configuration", self.issuer());
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "the OIDC provider did not start ({url}): {}",
                std::fs::read_to_string(self.dir.path().join("provider.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
            let t = Instant::now();
            while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && t.elapsed() < Duration::from_secs(10)
            {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Rotates: restarts the provider signing with `key` (publishing
    /// `keep` old keys too, as providers do during a rotation).
    pub fn rotate(&mut self, key: Key, keep: bool) {
        self.stop();
        let mut keys = vec![key];
        if keep {
            keys.extend(self.keys.iter().cloned());
        }
        self.keys = keys;
        self.run();
    }

    /// A client-credentials access token.
    pub async fn client_token(&self, client_id: &str, secret: &str) -> String {
        let request = reqwest::Client::new()
            .post(format!("{}/token", self.issuer()))
            .basic_auth(client_id, Some(secret))
            .form(&[
                ("grant_type", "client_credentials"),
                ("resource", "urn:idgov"),
                ("scope", "idgov"),
            ]);
        access_token(request).await
    }

    /// A user's access token through the authorization-code flow with PKCE
    /// (the provider's test interaction logs in `login_hint`).
    pub async fn user_token(&self, login_hint: &str) -> String {
        use base64::Engine;
        use sha2::Digest;
        let verifier = format!("verifier-{login_hint}-0123456789abcdefghijklmnopqrstuvwxyz");
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(verifier.as_bytes()));
        let http = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        let redirect = "http://127.0.0.1:9/callback";
        let mut url = format!(
            "{}/auth?client_id=idgov-cli&response_type=code&scope=openid&resource=urn:idgov\
             &redirect_uri={redirect}&code_challenge={challenge}&code_challenge_method=S256&login_hint={login_hint}",
            self.issuer()
        );
        let code = loop {
            let r = http.get(&url).send().await.expect("auth step");
            let next = r
                .headers()
                .get("location")
                .and_then(|l| l.to_str().ok())
                .unwrap_or_else(|| panic!("no redirect from {url}: {}", r.status()))
                .to_string();
            if let Some(q) = next.strip_prefix(&format!("{redirect}?")) {
                break q
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("code="))
                    .expect("code")
                    .to_string();
            }
            url = if next.starts_with("http") {
                next
            } else {
                format!("{}{next}", self.issuer())
            };
        };
        let request = http.post(format!("{}/token", self.issuer())).form(&[
            ("grant_type", "authorization_code"),
            ("client_id", "idgov-cli"),
            ("code", code.as_str()),
            ("redirect_uri", redirect),
            ("code_verifier", verifier.as_str()),
            ("resource", "urn:idgov"),
        ]);
        access_token(request).await
    }
}

/// The access token of a token endpoint's answer to `request`.
async fn access_token(request: reqwest::RequestBuilder) -> String {
    let r: serde_json::Value = request
        .send()
        .await
        .expect("token request")
        .json()
        .await
        .expect("token json");
    r["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token: {r}"))
        .to_string()
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.stop();
    }
}
