//! The README tour, run through the real `idgov` binary: serve on the
//! embedded store, mint a token, import the example organisation, apply its
//! policy, move and terminate someone, and verify and export the audit log.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_idgov");

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

struct Server {
    child: Child,
    url: String,
    /// What serve wrote to stderr after its banner.
    stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Server {
    /// Sends SIGTERM, as a service manager does, and waits for the exit:
    /// its status and what serve wrote meanwhile.
    fn terminate(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let t = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "idgov serve did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        // The reader thread sees the end of stderr once the process is gone.
        std::thread::sleep(Duration::from_millis(200));
        let lines = self.stderr.lock().unwrap().clone();
        (status, lines)
    }

    /// [`Server::terminate`], which must exit successfully with every
    /// worker stopped by itself (none dropped at the grace period).
    fn terminate_cleanly(self) {
        let (status, said) = self.terminate();
        assert!(status.success(), "{status:?}: {said:#?}");
        assert!(
            !said.iter().any(|l| l.contains("dropp")),
            "a worker had to be dropped: {said:#?}"
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `idgov serve` in `dir` on a random port and waits for its banner.
fn serve(dir: &Path, extra: &[&str]) -> (Server, Duration) {
    let started = Instant::now();
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(extra)
        .current_dir(dir)
        .env("IDGOV_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("idgov serve starts");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let url = loop {
        let line = lines.next().expect("serve printed its address").unwrap();
        if let Some(rest) = line.strip_prefix("idgov is serving on ") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
        assert!(!line.contains("error"), "serve failed: {line}");
    };
    let stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let keep = stderr.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            keep.lock().unwrap().push(line);
        }
    });
    (Server { child, url, stderr }, started.elapsed())
}

struct Cli<'a> {
    dir: &'a Path,
    url: String,
}

impl Cli<'_> {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .current_dir(self.dir)
            .env("IDGOV_SERVER", &self.url)
            .env("XDG_CONFIG_HOME", self.dir.join("config"))
            .env_remove("IDGOV_TOKEN")
            .output()
            .expect("idgov runs")
    }

    /// Runs a command that must succeed; returns its standard output.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            out.status.success(),
            "idgov {args:?} failed:\n{stdout}\n{stderr}"
        );
        stdout
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["--output", "json"]);
        serde_json::from_str(&self.ok(&a)).expect("json output")
    }
}

#[test]
fn the_readme_tour_works_step_by_step() {
    let dir = tempfile::tempdir().unwrap();
    let (server, startup) = serve(dir.path(), &[]);
    eprintln!("idgov serve printed its address after {startup:?}");
    let cli = Cli {
        dir: dir.path(),
        url: server.url.clone(),
    };
    let roster = examples().join("northwind-roster.csv");
    let policy = examples().join("northwind-policy.toml");
    let (roster, policy) = (roster.to_str().unwrap(), policy.to_str().unwrap());

    // Without a token the CLI says what to do.
    let out = cli.run(&["identity", "list"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("idgov dev token"));

    cli.ok(&[
        "dev",
        "token",
        "--role",
        "hr-feed",
        "--role",
        "it-admin",
        "--role",
        "security-officer",
        "--role",
        "auditor",
    ]);
    let dry = cli.json(&[
        "hr",
        "import",
        roster,
        "--time-zone",
        "Europe/Oslo",
        "--dry-run",
    ]);
    assert_eq!(dry["outcome"], "dry_run");
    assert_eq!(dry["joiners"], 304);
    assert_eq!(
        dry["preview_id"], "",
        "a dry run shown whole keeps no preview"
    );
    // A dry run larger than its answer shows is kept as a preview.
    let big = dir.path().join("big-roster.csv");
    let mut csv = String::from("employee_id,display_name,department\n");
    for i in 0..1200 {
        csv.push_str(&format!("N{i:04},Person {i},Sales\n"));
    }
    std::fs::write(&big, csv).unwrap();
    let big = big.to_str().unwrap();
    let preview = cli.json(&["hr", "import", big, "--dry-run"]);
    assert_eq!(preview["total_changes"], 1200, "{preview}");
    assert_eq!(preview["changes_truncated"], true);
    let preview_id = preview["preview_id"].as_str().unwrap();
    assert!(!preview_id.is_empty(), "{preview}");
    let table = cli.ok(&["hr", "import", big, "--dry-run"]);
    assert!(table.contains("`idgov hr preview "), "{table}");
    let all = cli.json(&["hr", "preview", preview_id]);
    assert_eq!(all["total_changes"], 1200, "{all}");
    let listed = all["changes"].as_array().unwrap();
    assert_eq!(listed.len(), 1200);
    assert!(listed.iter().all(|c| c["kind"] == "joiner"));
    assert!(all["expires_at"].as_str().is_some_and(|t| !t.is_empty()));
    let shown = cli.ok(&["hr", "preview", preview_id]);
    assert!(shown.contains("nothing was applied"), "{shown}");
    let out = cli.run(&["hr", "preview", "no-such-preview"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("send the dry run again"), "{err}");
    let imported = cli.json(&["hr", "import", roster, "--time-zone", "Europe/Oslo"]);
    assert_eq!(imported["outcome"], "applied");
    let again = cli.json(&["hr", "import", roster, "--time-zone", "Europe/Oslo"]);
    assert_eq!(
        again["sync_id"], imported["sync_id"],
        "the same file is the same snapshot"
    );
    assert_eq!(again["resent"], true, "{again}");
    assert_eq!(again["superseded_by"], "", "{again}");
    // What the import did, person by person (the source defaults to the
    // import's): 304 events, by employee id, the four 2027 starters
    // scheduled.
    let sync_id = imported["sync_id"].as_str().unwrap();
    let made = cli.json(&["hr", "events", "--roster-sync", sync_id, "--limit", "1000"]);
    let made = made.as_array().unwrap();
    assert_eq!(made.len(), 304);
    let ids: Vec<&str> = made
        .iter()
        .map(|e| e["employee_id"].as_str().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert_eq!(made.iter().filter(|e| e["state"] == "scheduled").count(), 4);
    let none = cli.ok(&["hr", "events", "--roster-sync", "no-such-sync"]);
    assert!(none.contains("no HR events match"), "{none}");

    let applied = cli.json(&["policy", "apply", policy, "--reason", "tour"]);
    assert_eq!(applied["outcome"], "applied");
    assert!(applied["grants_added"].as_i64().unwrap() > 2000);

    // Future starters are scheduled, in Oslo time.
    let scheduled = cli.json(&["hr", "events", "--state", "scheduled"]);
    let starts: Vec<&str> = scheduled
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["effective_at"].as_str().unwrap())
        .collect();
    assert_eq!(
        starts,
        [
            "2027-05-31T22:00:00Z",
            "2027-05-31T22:00:00Z",
            "2027-06-30T22:00:00Z",
            "2027-08-15T22:00:00Z"
        ]
    );

    // An accountant holds finance birthright; someone pending holds only public.
    let grants = cli.json(&["grant", "list", "E1007"]);
    let ents: Vec<&str> = grants
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["entitlement_id"].as_str().unwrap())
        .collect();
    assert!(ents.contains(&"erp.payments"), "{ents:?}");
    let pending = cli.json(&["identity", "get", "E1003"]);
    assert_eq!(pending["access_ceiling"], "public");

    // Move the accountant to Sales: finance birthright goes, sales comes.
    cli.ok(&[
        "hr",
        "send",
        "--type",
        "move",
        "--employee-id",
        "E1007",
        "--department",
        "Sales",
        "--title",
        "Account Executive",
    ]);
    let grants = cli.json(&["grant", "list", "E1007", "--all"]);
    let revoked: Vec<&str> = grants
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["revoke_reason"] == "mover")
        .map(|g| g["entitlement_id"].as_str().unwrap())
        .collect();
    assert!(revoked.contains(&"erp.payments"), "{revoked:?}");
    assert!(
        grants
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["entitlement_id"] == "crm.user" && g["active"] == true)
    );

    // Terminate them: nothing stays active, history stays.
    cli.ok(&[
        "hr",
        "send",
        "--type",
        "terminate",
        "--employee-id",
        "E1007",
    ]);
    let person = cli.json(&["identity", "get", "E1007"]);
    assert_eq!(person["status"], "terminated");
    assert_eq!(person["active_grants"], 0);
    let table = cli.ok(&["grant", "list", "E1007", "--all"]);
    assert!(table.contains("0 active grant(s)"), "{table}");
    // The README's audit trail of E1007: their HR events and their grants'.
    let trail = cli.json(&["audit", "list", "--employee", "E1007", "--limit", "1000"]);
    let actions: Vec<&str> = trail
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for a in ["hr.event.applied", "grant.added", "grant.revoked"] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
    let table = cli.ok(&["audit", "list", "--employee", "E1007"]);
    assert!(
        table.contains("grant.revoked") && table.contains("identity:E1007"),
        "{table}"
    );

    // A roster that drops 10% of people is held, and nothing applied.
    let csv = std::fs::read_to_string(examples().join("northwind-roster.csv")).unwrap();
    let kept: Vec<&str> = csv
        .lines()
        .enumerate()
        .filter(|(i, _)| *i == 0 || i % 10 != 3)
        .map(|(_, l)| l)
        .collect();
    let short = dir.path().join("short.csv");
    std::fs::write(&short, kept.join("\n")).unwrap();
    // Held is not success: scripts and cron jobs see exit status 3.
    let out = cli.run(&[
        "hr",
        "import",
        short.to_str().unwrap(),
        "--time-zone",
        "Europe/Oslo",
        "--output",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(3), "a held import exits 3");
    let held: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json output");
    assert_eq!(held["outcome"], "held");
    let list = cli.json(&["hr", "held", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    let id = held["held_change_id"].as_str().unwrap();
    // Every change of the held roster can be read before deciding.
    let all = cli.json(&["hr", "held", "show", id]);
    let changes = all["changes"].as_array().unwrap();
    assert_eq!(all["total_changes"], held["total_changes"], "{all}");
    assert_eq!(
        changes.len() as u64,
        held["total_changes"].as_u64().unwrap()
    );
    let leavers = changes.iter().filter(|c| c["kind"] == "leaver").count() as u64;
    assert_eq!(leavers, held["leavers"].as_u64().unwrap());
    // One of the dropped lines is a 2027 starter's: their start is withdrawn.
    assert_eq!(held["withdrawals"], 1, "{held}");
    let withdrawn: Vec<&str> = changes
        .iter()
        .filter(|c| c["kind"] == "withdrawal")
        .map(|c| c["employee_id"].as_str().unwrap())
        .collect();
    assert_eq!(withdrawn, ["E1302"]);
    assert!(
        leavers > 0
            && changes[..leavers as usize]
                .iter()
                .all(|c| c["kind"] == "leaver")
    );
    let table = cli.ok(&["hr", "held", "show", id]);
    assert!(
        table.contains("in the order they would apply (leavers first)"),
        "{table}"
    );
    cli.ok(&["hr", "held", "discard", id, "--reason", "truncated export"]);
    // Once decided, its changes are no longer listed, and the error says why.
    let out = cli.run(&["hr", "held", "show", id]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("discarded"), "{err}");

    // The audit trail verifies, online and from an export.
    let key = cli.json(&["audit", "public-key"]);
    assert_eq!(key["algorithm"], "ed25519", "{key}");
    assert_eq!(key["key_id"].as_str().map(str::len), Some(16), "{key}");
    let verify = cli.ok(&["audit", "verify"]);
    assert!(verify.starts_with("audit chain OK"), "{verify}");
    let export = dir.path().join("audit.jsonl");
    cli.ok(&["audit", "export", "--out", export.to_str().unwrap()]);
    let offline = cli.ok(&[
        "audit",
        "verify",
        "--file",
        export.to_str().unwrap(),
        "--public-key",
        key["public_key"].as_str().unwrap(),
    ]);
    assert!(
        offline.contains("signed checkpoint(s) match the chain, their signatures checked"),
        "{offline}"
    );
    assert!(
        !offline.contains("\n0 signed"),
        "the verify above signed one: {offline}"
    );
    // Another service's key does not verify this service's checkpoints.
    let other = tempfile::tempdir().unwrap();
    let stranger = idgov_server::app::audit_checkpoints::AuditSigner::load_or_create(other.path())
        .unwrap()
        .public_key();
    let wrong = cli.run(&[
        "audit",
        "verify",
        "--file",
        export.to_str().unwrap(),
        "--public-key",
        &stranger,
    ]);
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stdout).contains("not signed by this key"));
    assert!(offline.starts_with("export OK"), "{offline}");
    // Every field an export shows is verified: an edited detail or time,
    // an extra field, or a dropped one, is named by its event.
    let text = std::fs::read_to_string(&export).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let tampered = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v: serde_json::Value = serde_json::from_str(lines[4]).unwrap();
        f(&mut v);
        let mut copy: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        copy[4] = v.to_string();
        let path = dir.path().join("tampered.jsonl");
        std::fs::write(&path, copy.join("\n")).unwrap();
        let out = cli.run(&["audit", "verify", "--file", path.to_str().unwrap()]);
        assert!(!out.status.success(), "a tampered export passes");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let said = tampered(&|v| v["detail"] = serde_json::json!({"forged": true}));
    assert!(
        said.contains("EXPORT BROKEN at event 5") && said.contains("detail"),
        "{said}"
    );
    let said = tampered(&|v| v["occurred_at"] = serde_json::json!("2020-01-01T00:00:00.000000Z"));
    assert!(
        said.contains("EXPORT BROKEN at event 5") && said.contains("occurred_at"),
        "{said}"
    );
    let said = tampered(&|v| v["note"] = serde_json::json!("added"));
    assert!(said.contains("EXPORT BROKEN at event 5"), "{said}");
    let said = tampered(&|v| {
        v.as_object_mut().unwrap().remove("actor");
    });
    assert!(said.contains("EXPORT BROKEN at event 5"), "{said}");
    // `idgov … | head`: a reader that goes away early ends the CLI quietly.
    let mut child = Command::new(BIN)
        .args(["identity", "list"])
        .current_dir(dir.path())
        .env("IDGOV_SERVER", &server.url)
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(out.status.success(), "{err}");

    let matrix = cli.ok(&["authz", "matrix"]);
    assert!(matrix.contains("HrService.SubmitHrEvent") && matrix.contains("hr-feed"));

    access_tour(&cli);
    web_tour(&server.url);

    // Backup while the service runs, restore elsewhere, start, verify.
    let backup = dir.path().join("tour.idgov");
    let out = cli.ok(&["backup", "--out", backup.to_str().unwrap()]);
    assert!(out.contains("audit-signing-key"), "{out}");
    let pg = cli.run(&[
        "backup",
        "--out",
        "pg.dump",
        "--database-url",
        "postgres://idgov:s3cret@db.internal/idgov",
    ]);
    let err = String::from_utf8_lossy(&pg.stderr);
    assert!(!pg.status.success());
    assert!(
        err.contains("pg_dump --format=custom --file 'pg.dump'"),
        "{err}"
    );
    assert!(
        !err.contains("s3cret"),
        "the password is not printed: {err}"
    );
    let restored = dir.path().join("restored");
    cli.ok(&[
        "restore",
        backup.to_str().unwrap(),
        "--data-dir",
        restored.to_str().unwrap(),
    ]);
    let again = cli.run(&[
        "restore",
        backup.to_str().unwrap(),
        "--data-dir",
        restored.to_str().unwrap(),
    ]);
    assert!(
        !again.status.success(),
        "a non-empty data directory is refused"
    );
    {
        let (copy, _) = serve(dir.path(), &["--data-dir", restored.to_str().unwrap()]);
        let cli2 = Cli {
            dir: dir.path(),
            url: copy.url.clone(),
        };
        let v = cli2.ok(&["audit", "verify"]);
        assert!(v.starts_with("audit chain OK"), "{v}");
    }

    // The directory part of the tour.
    drop(server);
    directory_tour(dir.path());
}

/// The README's web part, as a browser would walk it in development mode:
/// the sign-in page, the development sign-in as E1000, their pages.
fn web_tour(url: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let page = http.get(format!("{url}/signin")).send().await.unwrap();
        assert_eq!(page.status(), 200);
        assert!(page.text().await.unwrap().contains("Development sign-in"));
        // A sign-in form posted from elsewhere is refused.
        let forged = http
            .post(format!("{url}/signin/dev"))
            .form(&[("employee_id", "E1000")])
            .send()
            .await
            .unwrap();
        assert_eq!(forged.status(), 403);
        let r = http
            .post(format!("{url}/signin/dev"))
            .header("sec-fetch-site", "same-origin")
            .form(&[("employee_id", "E1000"), ("next", "/")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
        let cookie = r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        let get = |path: &str| {
            let req = http.get(format!("{url}{path}")).header("cookie", &cookie);
            async move {
                let r = req.send().await.unwrap();
                (r.status().as_u16(), r.text().await.unwrap())
            }
        };
        let (status, home) = get("/").await;
        assert_eq!(status, 200);
        assert!(
            home.contains("My access") && home.contains("Jonas"),
            "{home}"
        );
        assert!(home.contains("id=\"team\""), "the CEO sees his team");
        for page in ["/reviews", "/approvals", "/request?q=server"] {
            let (status, _) = get(page).await;
            assert_eq!(status, 200, "{page}");
        }
        // Not a staff role in this sign-in: no admin page.
        assert_eq!(get("/admin").await.0, 404);
    });
}

/// The README's access-request part: a restricted request through three
/// approvals, its expiry notice, a separation-of-duties refusal and the
/// exception that allows it, a hand revocation.
fn access_tour(cli: &Cli) {
    let as_person = |id: &str, roles: &[&str]| {
        let mut a = vec!["dev", "token", "--subject", id];
        for r in roles {
            a.extend(["--role", r]);
        }
        cli.ok(&a);
    };
    as_person("E1209", &[]);
    let out = cli.run(&[
        "request",
        "create",
        "oslo-hq.server-room",
        "--days",
        "30",
        "-j",
        "rack the new switches",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("above E1209's access ceiling"), "{err}");

    as_person("E1203", &[]);
    let r = cli.json(&[
        "request",
        "create",
        "oslo-hq.server-room",
        "--days",
        "30",
        "-j",
        "rack the new switches",
    ]);
    let id = r["id"].as_str().unwrap().to_string();
    let assignees: Vec<&str> = r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["assignee"].as_str().unwrap())
        .collect();
    assert_eq!(assignees, ["E1000", "E1239", "@security"]);
    for (who, roles) in [
        ("E1000", &[][..]),
        ("E1239", &[][..]),
        ("E1222", &["security-officer"][..]),
    ] {
        as_person(who, roles);
        let waiting = cli.json(&["request", "list", "--view", "waiting"]);
        assert_eq!(waiting[0]["id"], id.as_str(), "{who} sees it waiting");
        cli.ok(&["request", "approve", &id, "-c", "ok"]);
    }
    let done = cli.json(&["request", "show", &id]);
    assert_eq!(done["state"], "approved");
    let expiring = cli.json(&["grant", "expiring", "E1203", "--within", "31"]);
    assert_eq!(expiring[0]["entitlement_id"], "oslo-hq.server-room");
    assert!(
        cli.json(&["grant", "expiring", "E1203", "--within", "29"])
            .as_array()
            .unwrap()
            .is_empty()
    );
    as_person("E1239", &[]);
    let late = cli.run(&["request", "deny", &id, "-c", "late"]);
    assert!(String::from_utf8_lossy(&late.stderr).contains("not pending"));

    as_person("E1004", &[]);
    let args = [
        "request",
        "create",
        "erp.payment-approval",
        "--days",
        "7",
        "-j",
        "quarter-end cover",
    ];
    let refused = cli.run(&args);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("payments-four-eyes"));
    as_person("E1221", &["security-officer"]);
    cli.ok(&[
        "sod",
        "grant-exception",
        "E1004",
        "payments-four-eyes",
        "--days",
        "7",
        "-j",
        "quarter-end cover, CEO informed",
    ]);
    as_person("E1004", &[]);
    let r2 = cli.json(&args);
    assert_eq!(
        r2["steps"][1]["assignee"], "E1221",
        "the owner (E1004) is the beneficiary: the fallback approver"
    );
    assert!(
        r2["sod_exception_id"]
            .as_str()
            .unwrap()
            .starts_with("sodx-")
    );

    // The CEO approves, the CISO decides the owner step (E1004 owns the
    // ERP), another security officer the last.
    let id2 = r2["id"].as_str().unwrap().to_string();
    for (who, roles) in [
        ("E1000", &[][..]),
        ("E1221", &["security-officer"][..]),
        ("E1222", &["security-officer"][..]),
    ] {
        as_person(who, roles);
        cli.ok(&["request", "approve", &id2, "-c", "ok"]);
    }

    as_person("ADMIN", &["it-admin", "security-officer", "auditor"]);
    assert_eq!(cli.json(&["sod", "check"])["open"], 0);
    let grant = done["grant_ids"][0].as_str().unwrap();
    cli.ok(&["grant", "revoke", grant, "--reason", "switches racked"]);
    let all = cli.json(&["grant", "list", "E1203", "--all"]);
    let g = all
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["id"] == grant)
        .unwrap();
    assert_eq!(g["revoke_reason"], "manual");
    // Everything about E1203, as an auditor asks for it: their HR record,
    // the request and its steps, the grant it gave and its revocation.
    let about = cli.json(&["audit", "list", "--employee", "E1203", "--limit", "5000"]);
    let about = about.as_array().unwrap();
    let actions: Vec<&str> = about
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for a in [
        "hr.event.applied",
        "access.request.created",
        "access.request.step_approved",
        "grant.added",
        "grant.revoked",
    ] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
    for e in about {
        assert!(
            e["target"] == "identity:E1203" || e["detail"].to_string().contains("\"E1203\""),
            "{e}"
        );
    }
    campaign_tour(cli, &as_person);
    // The tour's own token again.
    cli.ok(&[
        "dev",
        "token",
        "--role",
        "hr-feed",
        "--role",
        "it-admin",
        "--role",
        "security-officer",
        "--role",
        "auditor",
    ]);
}

/// The README's review part: the quarterly review of restricted access in
/// two stages, the physical-areas review closed with its defaults (held by
/// the guard, then discarded), the report, and evidence checked offline.
fn campaign_tour(cli: &Cli, as_person: &dyn Fn(&str, &[&str])) {
    as_person("ADMIN", &["it-admin", "security-officer", "auditor"]);
    let preview = cli.json(&["campaign", "preview", "restricted-quarterly"]);
    assert_eq!(preview["items"], 1, "{preview}");
    let c = cli.json(&["campaign", "start", "restricted-quarterly"]);
    let cid = c["id"].as_str().unwrap().to_string();
    as_person("E1000", &[]);
    let items = cli.json(&["campaign", "items"]);
    let item = items[0]["id"].as_str().unwrap().to_string();
    assert_eq!(items[0]["entitlement_id"], "erp.payment-approval");
    let refused = cli.run(&["campaign", "decide", &item, "--certify"]);
    assert!(
        !refused.status.success(),
        "restricted access needs a justification to certify"
    );
    let first = cli.json(&[
        "campaign",
        "decide",
        &item,
        "--certify",
        "-j",
        "quarter-end cover still running",
    ]);
    assert_eq!(
        first[0]["item"]["reviewer"], "E1221",
        "the owner is the subject: the fallback reviewer"
    );
    as_person("E1221", &["security-officer"]);
    cli.ok(&[
        "campaign",
        "decide",
        &item,
        "--revoke",
        "-j",
        "the cover ended",
    ]);
    as_person("ADMIN", &["it-admin", "security-officer", "auditor"]);
    let all = cli.json(&["grant", "list", "E1004", "--all"]);
    let g = all
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["entitlement_id"] == "erp.payment-approval")
        .unwrap();
    assert_eq!(g["revoke_reason"], "review");
    let closed = cli.json(&["campaign", "close", &cid]);
    assert_eq!(closed["campaign"]["state"], "closed");

    // Physical areas: nobody answers; the unanswered confidential archive
    // access would be revoked for more people than the guard allows.
    let p = cli.json(&["campaign", "start", "physical-areas"]);
    let pid = p["id"].as_str().unwrap().to_string();
    let out = cli.run(&["campaign", "close", &pid]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "held: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let held = cli.json(&["campaign", "show", &pid]);
    assert_eq!(held["state"], "held");
    let held_id = held["held_change_id"].as_str().unwrap().to_string();
    cli.ok(&[
        "hr",
        "held",
        "discard",
        &held_id,
        "--reason",
        "follow up with the archive owner instead",
    ]);
    assert_eq!(cli.json(&["campaign", "show", &pid])["state"], "closed");
    let report = cli.json(&["campaign", "report", &pid]);
    assert!(
        report["by_state"]["flagged"].as_u64().unwrap() > 0,
        "{report}"
    );

    // Evidence, checked offline; a tampered copy fails.
    let path = cli.dir.join("evidence.jsonl");
    cli.ok(&["campaign", "export", &cid, "--out", path.to_str().unwrap()]);
    let ok = cli.ok(&["campaign", "verify-evidence", path.to_str().unwrap()]);
    assert!(ok.starts_with("evidence OK"), "{ok}");
    let text = std::fs::read_to_string(&path).unwrap();
    let tampered = text.replace("\"state\":\"revoked\"", "\"state\":\"certified\"");
    assert_ne!(tampered, text);
    let bad = cli.dir.join("tampered.jsonl");
    std::fs::write(&bad, tampered).unwrap();
    let out = cli.run(&["campaign", "verify-evidence", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("was altered"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Runs `examples/directory/start-slapd.sh` on a free port.
struct ExampleSlapd(Child);

impl Drop for ExampleSlapd {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

fn directory_tour(dir: &Path) {
    if !Path::new("/usr/sbin/slapd").exists() {
        idgov_tests::skip_or_fail(
            "OpenLDAP slapd",
            "not installed (apt-get install slapd ldap-utils)",
        );
        return;
    }
    let port = idgov_tests::free_port().unwrap();
    let slapd = ExampleSlapd(
        Command::new(examples().join("directory/start-slapd.sh"))
            .env("SLAPD_DIR", dir.join("slapd"))
            .env("SLAPD_PORT", port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the example slapd did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The example configuration, pointed at this port.
    let example = std::fs::read_to_string(examples().join("directory/directory.toml")).unwrap();
    let password = examples().join("directory/ldap-password");
    let config = example
        .replace("ldap://127.0.0.1:3890", &format!("ldap://127.0.0.1:{port}"))
        .replace(
            "\"ldap-password\"",
            &format!("{:?}", password.display().to_string()),
        );
    std::fs::write(dir.join("directory.toml"), config).unwrap();
    let config = dir.join("directory.toml");
    let (server, _) = serve(dir, &["--directory", config.to_str().unwrap()]);
    let cli = Cli {
        dir,
        url: server.url.clone(),
    };

    let kinds = |v: &serde_json::Value| -> Vec<(String, String)> {
        let mut k: Vec<(String, String)> = v["items"]
            .as_array()
            .unwrap_or(&vec![])
            .iter()
            .map(|d| {
                (
                    d["kind"].as_str().unwrap().to_string(),
                    d["employee_id"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        k.sort();
        k
    };
    let dry = cli.json(&["directory", "sync", "--dry-run"]);
    let mut want = vec![
        ("enabled_leaver", "E1007"),
        ("orphan_account", ""),
        ("orphan_account", "E0999"),
        ("unmanaged_membership", "E1007"),
        ("unmanaged_membership", "E1007"),
        ("unmanaged_membership", "E1007"),
        ("unmanaged_membership", "E1050"),
        ("unmanaged_membership", "E1124"),
        ("unmanaged_membership", "E1125"),
        ("unmanaged_membership", "E1126"),
    ];
    want.sort();
    let want: Vec<(String, String)> = want
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(kinds(&dry), want, "exactly the planted drift");

    let run = cli.json(&["directory", "sync"]);
    assert_eq!(
        run["remediations_queued"], 9,
        "the enabled leaver: lock and strip; 7 removals"
    );
    cli.ok(&[
        "hr",
        "send",
        "--type",
        "terminate",
        "--employee-id",
        "E1008",
    ]);
    let t = Instant::now();
    loop {
        let pending = cli.json(&["provisioning", "list", "--state", "pending"]);
        if pending.as_array().unwrap().is_empty() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "provisioning did not finish: {pending}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let ops = cli.json(&["provisioning", "list", "--employee-id", "E1008"]);
    let ops = ops.as_array().unwrap();
    let tail: Vec<(Option<&str>, Option<&str>)> = ops[ops.len() - 2..]
        .iter()
        .map(|o| (o["kind"].as_str(), o["state"].as_str()))
        .collect();
    assert_eq!(
        tail,
        [
            (Some("disable"), Some("done")),
            (Some("strip_groups"), Some("done"))
        ],
        "locked, then out of every group"
    );
    let after = cli.json(&["directory", "sync"]);
    assert_eq!(
        after["drift"],
        serde_json::json!({"orphan_account": 2}),
        "only what cannot be remediated"
    );
    let orphans = cli.json(&["directory", "drift", "--kind", "orphan_account"]);
    assert_eq!(
        kinds(&serde_json::json!({ "items": orphans })),
        [
            ("orphan_account".to_string(), String::new()),
            ("orphan_account".to_string(), "E0999".to_string())
        ],
        "the kind filter keeps the orphans only"
    );
    // SIGTERM: every worker (here with the provisioning lanes) stops by
    // itself, and the process exits successfully; nothing is dropped.
    server.terminate_cleanly();
    drop(slapd);
}

#[test]
fn serve_refuses_a_public_address_in_development_mode() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--listen", "0.0.0.0:0"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback only"));
}

#[test]
fn a_malformed_roster_is_refused_before_anything_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        "employee_id,display_name,clearance\nE1,Ada,top-secret\n\"E2,unclosed\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args([
            "hr",
            "import",
            bad.to_str().unwrap(),
            "--server",
            "http://127.0.0.1:1",
        ])
        .env("XDG_CONFIG_HOME", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2, column clearance"), "{err}");
}

#[test]
fn a_dev_token_is_never_signed_with_a_key_the_server_does_not_have() {
    let dir = tempfile::tempdir().unwrap();
    // No server ever ran here: there is no key, and none is made.
    let out = Command::new(BIN)
        .args(["dev", "token", "--role", "auditor"])
        .current_dir(dir.path())
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .env_remove("IDGOV_DATA_DIR")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--data-dir"), "{err}");
    assert!(
        !dir.path().join("idgov-data").exists(),
        "no second key was made"
    );
}

#[test]
fn client_options_go_before_or_after_the_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = serve(dir.path(), &[]);
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .current_dir(dir.path())
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .env_remove("IDGOV_SERVER")
            .env_remove("IDGOV_TOKEN")
            .output()
            .unwrap()
    };
    let out = run(&["dev", "token", "--role", "auditor"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for args in [
        vec!["--server", &server.url, "--output", "json", "audit", "list"],
        vec!["audit", "--server", &server.url, "list", "-o", "json"],
        vec!["audit", "list", "--server", &server.url, "--output", "json"],
    ] {
        let out = run(&args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(v.is_array(), "{args:?}");
    }
    let out = run(&["-o", "json", "authz", "matrix"]);
    assert!(out.status.success());
    assert!(serde_json::from_slice::<serde_json::Value>(&out.stdout).is_ok());
}

/// A service on `dir`, started with `extra`, and the CLI signed in to it
/// with a development token of `roles`.
fn signed_in<'a>(dir: &'a Path, extra: &[&str], roles: &[&str]) -> (Server, Cli<'a>) {
    let (server, _) = serve(dir, extra);
    let cli = Cli {
        dir,
        url: server.url.clone(),
    };
    let mut args = vec!["dev", "token"];
    for role in roles {
        args.extend(["--role", role]);
    }
    cli.ok(&args);
    (server, cli)
}

/// The tour's roster with one person retitled (E1010, Yara Lund: Payroll
/// Lead instead of Payroll Specialist), written to `dir`: a newer export.
fn retitled_export(dir: &Path) -> PathBuf {
    let original = std::fs::read_to_string(examples().join("northwind-roster.csv")).unwrap();
    let retitled = original.replace(
        "Yara Lund,yara.lund@northwind.example,Finance,Payroll Specialist,",
        "Yara Lund,yara.lund@northwind.example,Finance,Payroll Lead,",
    );
    let b = dir.join("retitled.csv");
    std::fs::write(&b, retitled).unwrap();
    b
}

#[test]
fn the_same_file_after_a_newer_export_is_a_new_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, cli) = signed_in(dir.path(), &[], &["hr-feed", "it-admin"]);
    let path = examples().join("northwind-roster.csv");
    let roster = path.to_str().unwrap();
    let first = cli.json(&["hr", "import", roster, "--time-zone", "Europe/Oslo"]);
    assert_eq!(first["outcome"], "applied", "{first}");
    // The same file again after a newer export (A, B, A): a new snapshot
    // that restates A, not a retry of the first import ignored as one.
    let b = retitled_export(dir.path());
    let moved = cli.json(&[
        "hr",
        "import",
        b.to_str().unwrap(),
        "--time-zone",
        "Europe/Oslo",
    ]);
    assert_eq!(moved["outcome"], "applied", "{moved}");
    assert_eq!(
        cli.json(&["identity", "get", "E1010"])["title"],
        "Payroll Lead"
    );
    let restated = cli.json(&["hr", "import", roster, "--time-zone", "Europe/Oslo"]);
    assert_eq!(restated["outcome"], "applied", "{restated}");
    assert_eq!(restated["resent"], false, "{restated}");
    let first_id = first["sync_id"].as_str().unwrap();
    let new_id = restated["sync_id"].as_str().unwrap();
    assert!(
        new_id.starts_with(first_id) && new_id != first_id,
        "{restated}"
    );
    assert_eq!(
        cli.json(&["identity", "get", "E1010"])["title"],
        "Payroll Specialist"
    );
    // Imported once more, it is a retry of that restatement: the first
    // answer, marked as such, and no new snapshot.
    let retried = cli.json(&["hr", "import", roster, "--time-zone", "Europe/Oslo"]);
    assert_eq!(retried["resent"], true, "{retried}");
    assert_eq!(retried["sync_id"], first["sync_id"], "{retried}");
    assert_eq!(retried["superseded_by"], new_id, "{retried}");
    let table = cli.ok(&["hr", "import", roster, "--time-zone", "Europe/Oslo"]);
    assert!(table.contains("nothing was applied now"), "{table}");
}

#[test]
fn a_sync_id_names_one_roster() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, cli) = signed_in(dir.path(), &[], &["hr-feed", "it-admin"]);
    let path = examples().join("northwind-roster.csv");
    let roster = path.to_str().unwrap();
    // The same file read in another zone is another snapshot.
    let oslo = cli.json(&[
        "hr",
        "import",
        roster,
        "--time-zone",
        "Europe/Oslo",
        "--dry-run",
    ]);
    let utc = cli.json(&["hr", "import", roster, "--time-zone", "UTC", "--dry-run"]);
    assert_ne!(oslo["sync_id"], utc["sync_id"], "{oslo} {utc}");
    let first = cli.json(&[
        "hr",
        "import",
        roster,
        "--time-zone",
        "Europe/Oslo",
        "--sync-id",
        "daily",
    ]);
    assert_eq!(first["outcome"], "applied", "{first}");
    // A corrected export under the same id is refused, not answered with
    // the first one's outcome; nothing of it is applied.
    let b = retitled_export(dir.path());
    let out = cli.run(&[
        "hr",
        "import",
        b.to_str().unwrap(),
        "--time-zone",
        "Europe/Oslo",
        "--sync-id",
        "daily",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("already received with different content")
            && err.contains("new sync_id")
            && err.contains("leave --sync-id out"),
        "{err}"
    );
    assert_eq!(
        cli.json(&["identity", "get", "E1010"])["title"],
        "Payroll Specialist"
    );
    // The same file under the same id is a retry.
    let again = cli.json(&[
        "hr",
        "import",
        roster,
        "--time-zone",
        "Europe/Oslo",
        "--sync-id",
        "daily",
    ]);
    assert_eq!(again["resent"], true, "{again}");
}

#[test]
fn a_policy_naming_people_not_yet_imported_waits_for_them() {
    let dir = tempfile::tempdir().unwrap();
    let policy = examples().join("northwind-policy.toml");
    let (_server, cli) = signed_in(
        dir.path(),
        &["--policy", policy.to_str().unwrap()],
        &["hr-feed", "it-admin"],
    );
    let v = cli.json(&["policy", "show"]);
    assert_eq!(v["version"], 0, "not applied before its owners exist: {v}");
    let roster = examples().join("northwind-roster.csv");
    cli.ok(&[
        "hr",
        "import",
        roster.to_str().unwrap(),
        "--time-zone",
        "Europe/Oslo",
    ]);
    // The service applies it by itself within a few seconds: the version
    // first, then everyone's grants (the recompute runs in steps after the
    // version is committed, so a read in between sees the version alone).
    let t = Instant::now();
    loop {
        let v = cli.json(&["policy", "show"]);
        let grants = cli.json(&["grant", "list", "E1007"]);
        if v["version"] == 1 && grants.as_array().is_some_and(|g| !g.is_empty()) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "never applied: {v}; E1007 holds {grants}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn sigterm_stops_serve_with_every_worker_even_one_waiting_for_its_policy() {
    let dir = tempfile::tempdir().unwrap();
    let policy = examples().join("northwind-policy.toml");
    // A policy whose owners are not imported: a worker retries it.
    let (server, cli) = signed_in(
        dir.path(),
        &["--policy", policy.to_str().unwrap()],
        &["auditor"],
    );
    assert_eq!(cli.json(&["policy", "show"])["version"], 0);
    server.terminate_cleanly();
    // The data directory opens again: the store was closed cleanly.
    let (again, _) = serve(dir.path(), &[]);
    let cli = Cli {
        dir: dir.path(),
        url: again.url.clone(),
    };
    let v = cli.ok(&["audit", "verify"]);
    assert!(v.starts_with("audit chain OK"), "{v}");
}

/// `--limit` means what it says above the server's page of 1,000: the
/// client asks page after page. With more to follow, JSON output stays one
/// document and says so on stderr, with the token to go on from.
#[test]
fn a_limit_above_one_page_lists_that_many() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, cli) = signed_in(dir.path(), &[], &["hr-feed", "it-admin", "auditor"]);
    let roster = examples().join("northwind-roster.csv");
    cli.ok(&[
        "hr",
        "import",
        roster.to_str().unwrap(),
        "--time-zone",
        "Europe/Oslo",
    ]);
    let policy = examples().join("northwind-policy.toml");
    cli.ok(&["policy", "apply", policy.to_str().unwrap(), "--reason", "t"]);
    let seqs = |v: &serde_json::Value| -> Vec<i64> {
        v.as_array()
            .expect("an array")
            .iter()
            .map(|e| e["seq"].as_i64().expect("seq"))
            .collect()
    };
    let list = |args: &[&str]| {
        let mut a = vec!["audit", "list", "--output", "json"];
        a.extend(args);
        let out = cli.run(&a);
        assert!(out.status.success(), "{args:?}: {out:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json output");
        (seqs(&v), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let (all, note) = list(&["--limit", "100000"]);
    assert!(all.len() > 2500, "{} audit events", all.len());
    assert_eq!(all, (1..=all.len() as i64).collect::<Vec<_>>());
    assert!(!note.contains("more follow"), "{note}");
    let (first, note) = list(&["--limit", "2500"]);
    assert_eq!(first, (1..=2500).collect::<Vec<_>>());
    let token = note
        .split("--page-token ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .unwrap_or_else(|| panic!("no token to go on from: {note}"));
    // The service's own workers may have added events meanwhile (signed
    // checkpoints): the rest goes on from 2,501 without a gap.
    let (rest, note) = list(&["--limit", "100000", "--page-token", token]);
    assert!(rest.len() >= all.len() - 2500, "{} after 2,500", rest.len());
    assert_eq!(rest, (2501..2501 + rest.len() as i64).collect::<Vec<_>>());
    assert!(!note.contains("more follow"), "{note}");
    // The table says the same to people.
    let table = cli.ok(&["audit", "list", "--limit", "1500"]);
    assert!(table.contains("more follow"), "{table}");
    assert!(table.contains("│ 1500 "), "the 1,500th event is listed");
    assert!(!table.contains("│ 1501 "), "no more than 1,500");
}
