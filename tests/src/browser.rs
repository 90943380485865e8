//! A real browser: Debian's `chromium`, driven through `chromium-driver`
//! (chromedriver) on a random loopback port, with `fantoccini`. Each
//! [`Driver::browser`] is a fresh headless session (its own profile and
//! cookies), i.e. another person at another computer.

use fantoccini::{Client, ClientBuilder};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

const WATCHDOG: &str = r#"
"$DRIVER" --port="$PORT" >>"$LOG" 2>&1 &
N=$!
trap 'kill -TERM "$N" 2>/dev/null; wait "$N"; exit 0' TERM INT
while [ -d "/proc/$OWNER" ] && kill -0 "$N" 2>/dev/null; do sleep 0.2; done
kill -TERM "$N" 2>/dev/null
wait "$N"
"#;

/// True when the browser and its driver are installed.
pub fn available() -> Result<(), String> {
    for p in [CHROMEDRIVER, CHROMIUM] {
        if !Path::new(p).exists() {
            return Err(format!(
                "{p} is missing (apt-get install chromium chromium-driver; scripts/test does it)"
            ));
        }
    }
    Ok(())
}

/// A running chromedriver, stopped when dropped (or when the test process
/// dies: a watchdog owns it).
pub struct Driver {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl Driver {
    /// Starts chromedriver; `None` (after [`crate::skip_or_fail`]) when the
    /// browser is not installed.
    pub fn start() -> Option<Driver> {
        if let Err(e) = available() {
            crate::skip_or_fail("chromium and chromium-driver", &e);
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let port = crate::free_port().expect("a free port");
        let log = dir.path().join("chromedriver.log");
        let child = Command::new("/bin/sh")
            .arg("-c")
            .arg(WATCHDOG)
            .env("DRIVER", CHROMEDRIVER)
            .env("PORT", port.to_string())
            .env("LOG", &log)
            .env("OWNER", std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "chromedriver did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Driver { port, dir, child })
    }

    /// A new headless browser session.
    pub async fn browser(&self) -> Client {
        let profile = tempfile::Builder::new()
            .prefix("profile")
            .tempdir_in(self.dir.path())
            .expect("profile dir")
            .keep();
        let caps = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        });
        let caps = match caps {
            serde_json::Value::Object(m) => m,
            _ => unreachable!(),
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let mut b = ClientBuilder::new(connector);
        b.capabilities(caps);
        let mut last = String::new();
        for _ in 0..3 {
            match b.connect(&format!("http://127.0.0.1:{}", self.port)).await {
                Ok(c) => return c,
                Err(e) => {
                    last = e.to_string();
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
        }
        panic!("cannot open a browser session: {last}");
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// Where the suite writes screenshots for people to look at (not
/// committed): `target/web-screenshots/` of the workspace, or
/// `IDGOV_SCREENSHOTS`.
pub fn screenshot_dir() -> PathBuf {
    let d = std::env::var_os("IDGOV_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/web-screenshots"));
    let _ = std::fs::create_dir_all(&d);
    d
}

/// Saves a screenshot of the current page as `name.png`.
pub async fn screenshot(c: &Client, name: &str) {
    if let Ok(png) = c.screenshot().await {
        let _ = std::fs::write(screenshot_dir().join(format!("{name}.png")), png);
    }
}
