//! The web app (issue 12) in a real browser: Debian's headless chromium
//! through chromium-driver, against the real server and the real test OIDC
//! provider (people sign in on the provider's login page). Screenshots of
//! the main pages go to `target/web-screenshots/` for people to look at.

use crate::common::*;
use fantoccini::{Client, Locator};
use idgov_authz::{Role, Rpc};
use idgov_domain::Classification;
use idgov_domain::access::{RequestState, TargetKind};
use idgov_domain::hr::EventKind;
use idgov_domain::identity::AttributesPatch;
use idgov_domain::review::ItemState;
use idgov_tests::browser::{Driver, screenshot};
use idgov_tests::oidc::Provider;
use idgov_tests::server::{TestServer, start_at};
use std::collections::BTreeMap;
use std::time::Duration;

const SCRIPT: &str = "<script>window.__pwned=1</script>";
const IMG: &str = "\"><img src=x onerror=\"window.__pwned=2\">";

/// A server with web sign-in through the provider, the provider, and a
/// browser driver; the organisation of the access tests (B1 over O1, O2,
/// F1, M1, M2, S1, S2; E1..E3 under M1; E4 under M2) and its campaigns.
struct Web {
    server: TestServer,
    _provider: Provider,
    driver: Driver,
    base: String,
    _secret: tempfile::TempDir,
}

async fn setup() -> Option<Web> {
    let groups: BTreeMap<&str, Vec<&str>> = BTreeMap::from([
        ("S1", vec!["security-team"]),
        ("S2", vec!["security-team"]),
        ("A1", vec!["auditors"]),
    ]);
    let provider = Provider::start("web-key", "RS256", &groups, 300)?;
    let driver = Driver::start()?;
    let secret = tempfile::tempdir().expect("dir");
    let secret_file = secret.path().join("web-secret");
    std::fs::write(&secret_file, "idgov-web-secret\n").expect("secret");
    let port = idgov_tests::free_port().expect("port");
    let base = format!("http://127.0.0.1:{port}");
    let auth = format!(
        r#"
[oidc]
issuer = "{issuer}"
audience = "idgov"
roles_claim = "groups"

[oidc.roles]
"security-team" = "security-officer"
"auditors" = "auditor"

[web]
client_id = "idgov-web"
client_secret_file = "{secret}"
redirect_url = "{base}/auth/callback"
"#,
        issuer = provider.issuer(),
        secret = secret_file.display(),
    );
    let server = start_at("sqlite", Some(&auth), port).await?;
    let app = server.app();
    hire(app, &Person::new("B1", "Management")).await;
    hire(app, &Person::new("O1", "Management")).await;
    for id in ["O2", "F1", "M1", "M2", "S1", "S2", "A1"] {
        let mut p = Person::new(id, "Management");
        p.manager = Some("B1");
        if id == "O2" {
            p.clearance = Classification::Restricted;
        }
        hire(app, &p).await;
    }
    for (id, m) in [("E1", "M1"), ("E2", "M1"), ("E3", "M1"), ("E4", "M2")] {
        let mut p = Person::new(id, "Engineering");
        p.manager = Some(m);
        if id == "E1" {
            p.clearance = Classification::Restricted;
        }
        hire(app, &p).await;
    }
    app.apply_policy(
        &crate::campaigns::campaign_policy(""),
        false,
        "web test policy",
        "user:admin",
    )
    .await
    .expect("policy applies");
    Some(Web {
        server,
        _provider: provider,
        driver,
        base,
        _secret: secret,
    })
}

impl Web {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A new browser (another person), signed in as `who` on the
    /// provider's login page.
    async fn signed_in(&self, who: &str) -> Client {
        let c = self.driver.browser().await;
        self.sign_in(&c, who).await;
        c
    }

    async fn sign_in(&self, c: &Client, who: &str) {
        c.goto(&self.url("/")).await.expect("open idgov");
        // Not signed in: the sign-in page.
        let button = c
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Id("signin"))
            .await
            .expect("the sign-in page");
        button.click().await.expect("sign in");
        // The provider's login page.
        let login = c
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Id("login"))
            .await
            .expect("the provider's login page");
        login.send_keys(who).await.expect("type the user");
        c.find(Locator::Id("provider-submit"))
            .await
            .expect("submit")
            .click()
            .await
            .expect("submit");
        // Back at idgov, signed in.
        let me = match c
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Id("whoami"))
            .await
        {
            Ok(e) => e,
            Err(_) => panic!(
                "{who} is not signed in: at {} showing {}",
                c.current_url()
                    .await
                    .map(|u| u.to_string())
                    .unwrap_or_default(),
                c.source().await.unwrap_or_default()
            ),
        };
        assert_eq!(
            me.attr("data-employee").await.expect("attr").as_deref(),
            Some(who)
        );
    }

    async fn path(c: &Client) -> String {
        c.current_url().await.expect("url").path().to_string()
    }

    /// The text of the first `css` element, waiting for it to appear (a
    /// click's page may still be loading).
    async fn text(c: &Client, css: &str) -> String {
        match c
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
        {
            Ok(e) => e.text().await.expect("text"),
            Err(_) => panic!(
                "{css} is not on {}: {}",
                c.current_url()
                    .await
                    .map(|u| u.to_string())
                    .unwrap_or_default(),
                c.source().await.unwrap_or_default()
            ),
        }
    }

    async fn click(c: &Client, css: &str) {
        c.wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|_| panic!("{css} on the page"))
            .click()
            .await
            .expect("click");
    }

    /// Waits until the browser is on a page whose path starts with `prefix`.
    async fn wait_path(c: &Client, prefix: &str) {
        for _ in 0..100 {
            if Web::path(c).await.starts_with(prefix) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("never reached {prefix}: at {}", Web::path(c).await);
    }

    /// The session cookie's value in `c`.
    async fn session_of(c: &Client) -> String {
        c.get_named_cookie("idgov-session")
            .await
            .expect("a session cookie")
            .value()
            .to_string()
    }

    /// A plain HTTP client (no redirects followed) sending `session`.
    fn http() -> reqwest::Client {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client")
    }
}

/// A manager signs in through the provider, reviews their team's access
/// (one certified, one revoked with a reason, one left for later, decided
/// together after a confirmation that lists what will be revoked), and
/// signs out.
#[tokio::test]
async fn a_manager_signs_in_reviews_a_campaign_and_signs_out() {
    let Some(w) = setup().await else { return };
    let app = w.server.app();
    let c = app
        .start_campaign("internal", "user:S1")
        .await
        .expect("campaign starts");
    let b = w.signed_in("M1").await;
    screenshot(&b, "my-access").await;
    assert!(Web::text(&b, "#grants").await.contains("wiki"));
    // The team list links each report.
    assert!(Web::text(&b, "#team").await.contains("E2"));

    b.goto(&w.url("/reviews")).await.unwrap();
    let progress = Web::text(&b, "#progress").await;
    assert!(progress.contains("3 open"), "{progress}");
    screenshot(&b, "my-reviews").await;
    let items = app
        .review_items(
            &crate::access::acc("M1", &[], Rpc::ListReviewItems),
            true,
            Some(c.id.clone()),
            None,
            None,
            "",
            100,
        )
        .await
        .unwrap();
    assert_eq!(items.len(), 3, "{items:?}");
    let of = |e: &str| {
        items
            .iter()
            .find(|i| i.employee_id == e)
            .unwrap()
            .id
            .clone()
    };
    let (i1, i2, i3) = (of("E1"), of("E2"), of("E3"));
    // Each item shows its context in words.
    let row = Web::text(&b, &format!("#item-{i2}")).await;
    assert!(row.contains("birthright of role everyone"), "{row}");
    assert!(row.contains("peers"), "{row}");
    Web::click(&b, &format!("#item-{i1} input[value=certify]")).await;
    Web::click(&b, &format!("#item-{i2} input[value=revoke]")).await;
    b.find(Locator::Css(&format!("#item-{i2} input[name='j.{i2}']")))
        .await
        .unwrap()
        .send_keys("moved to another project")
        .await
        .unwrap();
    Web::click(&b, "#review-submit").await;
    Web::wait_path(&b, "/reviews/decide").await;
    // The confirmation lists what will be revoked; nothing is decided yet.
    let revoke = Web::text(&b, "#to-revoke").await;
    assert!(revoke.contains("wiki of E2"), "{revoke}");
    assert!(revoke.contains("moved to another project"));
    assert!(Web::text(&b, "#to-certify").await.contains("wiki of E1"));
    screenshot(&b, "review-confirm").await;
    assert_eq!(
        app.review_item(&crate::access::acc("M1", &[], Rpc::ListReviewItems), &i2)
            .await
            .unwrap()
            .state,
        ItemState::Open
    );
    Web::click(&b, "#confirm-submit").await;
    Web::text(&b, "#summary").await;
    let summary = Web::text(&b, "#summary").await;
    assert!(summary.starts_with("2 recorded"), "{summary}");
    screenshot(&b, "review-result").await;
    let acc = crate::access::acc("M1", &[], Rpc::ListReviewItems);
    assert_eq!(
        app.review_item(&acc, &i1).await.unwrap().state,
        ItemState::Certified
    );
    let revoked = app.review_item(&acc, &i2).await.unwrap();
    assert_eq!(revoked.state, ItemState::Revoked);
    assert_eq!(revoked.justification, "moved to another project");
    assert_eq!(revoked.decided_by.as_deref(), Some("M1"));
    assert_eq!(
        app.review_item(&acc, &i3).await.unwrap().state,
        ItemState::Open
    );
    assert!(!active_grants(app, "E2").await.contains(&"wiki".to_string()));
    assert!(active_grants(app, "E1").await.contains(&"wiki".to_string()));

    // Sign out ends the session here (the provider then asks about its own).
    let before = Web::session_of(&b).await;
    b.goto(&w.url("/")).await.unwrap();
    Web::click(&b, "#signout").await;
    // RP-initiated logout: on to the provider's end-session page.
    for _ in 0..50 {
        if !b.current_url().await.unwrap().as_str().starts_with(&w.base) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let at = b.current_url().await.unwrap();
    assert!(at.as_str().starts_with(&w._provider.issuer()), "{at}");
    b.goto(&w.url("/reviews")).await.unwrap();
    assert_eq!(Web::path(&b).await, "/signin");
    let r = Web::http()
        .get(w.url("/"))
        .header("cookie", format!("idgov-session={before}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "the old session id signs nobody in");
    b.close().await.unwrap();
}

/// A restricted request needs three approvals (manager, owner, security):
/// the requester asks on the web, and three different people approve it in
/// their own browsers.
#[tokio::test]
async fn a_three_step_request_is_approved_by_three_people() {
    let Some(w) = setup().await else { return };
    let app = w.server.app();
    let e1 = w.signed_in("E1").await;
    e1.goto(&w.url("/request?q=vault")).await.unwrap();
    screenshot(&e1, "request-catalog").await;
    Web::click(&e1, "#catalog tr[data-id=vault] a.button").await;
    let form = e1
        .wait()
        .at_most(Duration::from_secs(5))
        .for_element(Locator::Id("justification"))
        .await
        .unwrap();
    form.send_keys("rack the new switches").await.unwrap();
    e1.find(Locator::Id("duration_days"))
        .await
        .unwrap()
        .send_keys("30")
        .await
        .unwrap();
    screenshot(&e1, "request-form").await;
    Web::click(&e1, "#request-submit").await;
    Web::wait_path(&e1, "/requests/").await;
    let state = Web::text(&e1, "dd.state").await;
    assert!(state.contains("pending"), "{state}");
    assert!(state.contains("waiting for M1"), "{state}");
    let id = Web::path(&e1)
        .await
        .strip_prefix("/requests/")
        .expect("the request's page")
        .to_string();

    for (who, next) in [
        ("M1", Some("O2")),
        ("O2", Some("any security officer")),
        ("S1", None),
    ] {
        let b = w.signed_in(who).await;
        b.goto(&w.url("/approvals")).await.unwrap();
        let section = Web::text(&b, &format!("#req-{id}")).await;
        assert!(section.contains("rack the new switches"), "{section}");
        b.find(Locator::Css(&format!("#req-{id} input[name=comment]")))
            .await
            .unwrap()
            .send_keys(&format!("ok from {who}"))
            .await
            .unwrap();
        if who == "M1" {
            screenshot(&b, "approvals").await;
        }
        Web::click(&b, &format!("#req-{id} button[value=approve]")).await;
        Web::wait_path(&b, "/requests/").await;
        let state = Web::text(&b, "dd.state").await;
        match next {
            Some(n) => assert!(
                state.contains(&format!("waiting for {n}")),
                "{who}: {state}"
            ),
            None => assert!(state.starts_with("approved"), "{state}"),
        }
        b.close().await.unwrap();
    }
    let r = app
        .request(&crate::access::acc("E1", &[], Rpc::GetAccessRequest), &id)
        .await
        .unwrap();
    assert_eq!(r.state, RequestState::Approved);
    let deciders: Vec<_> = r
        .steps
        .iter()
        .filter_map(|s| s.decided_by.clone())
        .collect();
    assert_eq!(deciders, ["M1", "O2", "S1"]);
    assert!(
        active_grants(app, "E1")
            .await
            .contains(&"vault".to_string())
    );
    // The requester sees it on their access page, with its end date.
    e1.goto(&w.url("/")).await.unwrap();
    let grants = Web::text(&e1, "#grants").await;
    assert!(grants.contains("vault"), "{grants}");
    assert!(grants.contains("approved by"), "{grants}");
    e1.close().await.unwrap();
}

async fn pending(app: &idgov_server::App, id: String) -> RequestState {
    let acc = crate::access::acc("E2", &[], Rpc::GetAccessRequest);
    app.request(&acc, &id).await.unwrap().state
}

/// Serves one page (a form that posts to idgov on load) on another port
/// of the same host: another origin, the same site.
async fn serve_forgery(html: String) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{html}",
                html.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
        }
    });
    port
}

/// CSRF and session rules: a form posted from another origin is refused
/// even with the right token; a post without the session's token is
/// refused; a session id planted before sign-in is not the one after it; a
/// person who leaves is signed out at once.
#[tokio::test]
async fn forged_posts_planted_sessions_and_leavers_are_refused() {
    let Some(w) = setup().await else { return };
    let app = w.server.app();
    let req = crate::access::request(
        app,
        "E2",
        crate::access::ask("E2", TargetKind::Entitlement, "chat", "", None),
    )
    .await
    .unwrap();

    // A session id planted before sign-in.
    let b = w.driver.browser().await;
    b.goto(&w.url("/signin")).await.unwrap();
    let planted = "ab".repeat(32);
    b.execute(
        &format!("document.cookie = 'idgov-session={planted}; path=/';"),
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(Web::session_of(&b).await, planted);
    w.sign_in(&b, "M1").await;
    let session = Web::session_of(&b).await;
    assert_ne!(session, planted, "sign-in makes a new session id");
    let planted_get = Web::http()
        .get(w.url("/approvals"))
        .header("cookie", format!("idgov-session={planted}"))
        .send()
        .await
        .unwrap();
    assert_eq!(planted_get.status(), 303);

    // The session's CSRF token, as the page carries it.
    b.goto(&w.url("/approvals")).await.unwrap();
    let token = b
        .find(Locator::Css(&format!("#req-{} input[name=csrf]", req.id)))
        .await
        .unwrap()
        .attr("value")
        .await
        .unwrap()
        .unwrap();

    // Another origin (same host, another port) posts the approval form,
    // token and all: the browser sends the cookie, idgov refuses.
    let forgery = format!(
        "<form method=post action='{}/approvals/{}'><input name=csrf value='{token}'>\
         <input name=decision value=approve><input name=comment value=forged></form>\
         <script>document.forms[0].submit()</script>",
        w.base, req.id
    );
    let evil = serve_forgery(forgery).await;
    b.goto(&format!("http://127.0.0.1:{evil}/")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let body = b.source().await.unwrap();
    assert!(body.contains("Refused"), "{body}");
    assert_eq!(pending(app, req.id.clone()).await, RequestState::Pending);

    // Same origin without the token, or with another session's: refused.
    let post = |fields: Vec<(&'static str, String)>, site: &'static str| {
        let url = w.url(&format!("/approvals/{}", req.id));
        let cookie = format!("idgov-session={session}");
        async move {
            Web::http()
                .post(url)
                .header("cookie", cookie)
                .header("sec-fetch-site", site)
                .form(&fields)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let approve = || vec![("decision", "approve".to_string())];
    assert_eq!(post(approve(), "same-origin").await, 403);
    let mut wrong = approve();
    wrong.push(("csrf", "0".repeat(64)));
    assert_eq!(post(wrong, "same-origin").await, 403);
    let mut right = approve();
    right.push(("csrf", token.clone()));
    assert_eq!(post(right.clone(), "cross-site").await, 403);
    assert_eq!(post(right.clone(), "same-site").await, 403);
    assert_eq!(pending(app, req.id.clone()).await, RequestState::Pending);
    // The control: the same post from idgov's own page is accepted.
    assert_eq!(post(right, "same-origin").await, 303);
    assert_eq!(pending(app, req.id.clone()).await, RequestState::Approved);

    // A leaver is signed out everywhere at once.
    let e3 = w.signed_in("E3").await;
    app.submit_event(
        event(
            app,
            EventKind::Terminate,
            "bye-E3",
            "E3",
            "",
            AttributesPatch::default(),
        ),
        "service:hr",
    )
    .await
    .unwrap();
    e3.goto(&w.url("/")).await.unwrap();
    assert_eq!(Web::path(&e3).await, "/signin");
    let ended = app
        .audit_events(
            &idgov_store::AuditFilter {
                action: "web.session_ended".into(),
                target: "identity:E3".into(),
                ..Default::default()
            },
            0,
            10,
        )
        .await
        .unwrap();
    assert_eq!(ended.len(), 1, "the end is audited");
    e3.close().await.unwrap();
    b.close().await.unwrap();
}

/// A manager who opens another manager's review item, another team's
/// person or request gets the same 404 page as for one that does not
/// exist, byte for byte.
#[tokio::test]
async fn another_managers_objects_answer_like_missing_ones() {
    let Some(w) = setup().await else { return };
    let app = w.server.app();
    let c = app.start_campaign("internal", "user:S1").await.unwrap();
    let theirs = app
        .review_items(
            &crate::access::acc("M2", &[], Rpc::ListReviewItems),
            true,
            Some(c.id.clone()),
            None,
            None,
            "",
            10,
        )
        .await
        .unwrap();
    assert_eq!(theirs.len(), 1);
    let req = crate::access::request(
        app,
        "E4",
        crate::access::ask("E4", TargetKind::Entitlement, "chat", "", None),
    )
    .await
    .unwrap();
    let b = w.signed_in("M1").await;
    let session = Web::session_of(&b).await;
    let get = |path: String| {
        let url = w.url(&path);
        let cookie = format!("idgov-session={session}");
        async move {
            let r = Web::http()
                .get(url)
                .header("cookie", cookie)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    for (other, missing) in [
        (
            format!("/reviews/items/{}", theirs[0].id),
            "/reviews/items/rvi-0000000000000000".to_string(),
        ),
        (
            format!("/requests/{}", req.id),
            "/requests/req-0000000000000000".to_string(),
        ),
        ("/people/E4".to_string(), "/people/E9999".to_string()),
    ] {
        let a = get(other.clone()).await;
        let m = get(missing.clone()).await;
        assert_eq!(a.0, 404, "{other}");
        assert_eq!(a, m, "{other} and {missing} answer alike");
    }
    // The browser shows it as a page.
    b.goto(&w.url(&format!("/reviews/items/{}", theirs[0].id)))
        .await
        .unwrap();
    assert_eq!(Web::text(&b, "h1").await, "Not found");
    // Their own report's item opens.
    let mine = app
        .review_items(
            &crate::access::acc("M1", &[], Rpc::ListReviewItems),
            true,
            Some(c.id),
            None,
            None,
            "",
            10,
        )
        .await
        .unwrap();
    b.goto(&w.url(&format!("/reviews/items/{}", mine[0].id)))
        .await
        .unwrap();
    assert_eq!(Web::text(&b, "h1").await, "Review item");
    screenshot(&b, "review-item").await;
    b.close().await.unwrap();
}

/// HR data and justifications with markup render as text: the DOM holds
/// the characters, no script runs, no element is made.
#[tokio::test]
async fn hostile_names_and_justifications_render_as_text() {
    let Some(w) = setup().await else { return };
    let app = w.server.app();
    let mut p = Person::new("E5", "Engineering");
    p.manager = Some("M1");
    let mut patch = p.patch();
    patch.display_name = Some(SCRIPT.into());
    patch.title = Some(IMG.into());
    app.submit_event(
        event(app, EventKind::Hire, "hire-E5", "E5", "", patch),
        "service:hr",
    )
    .await
    .unwrap();
    let why = format!("{SCRIPT} {IMG}");
    let req = crate::access::request(
        app,
        "E5",
        crate::access::ask("E5", TargetKind::Entitlement, "chat", &why, None),
    )
    .await
    .unwrap();
    let b = w.signed_in("M1").await;
    for page in ["/", "/approvals", &format!("/requests/{}", req.id)] {
        b.goto(&w.url(page)).await.unwrap();
        let verdict = b
            .execute(
                "return [window.__pwned === undefined, document.querySelectorAll('img').length, \
                 document.querySelectorAll('main script').length, document.body.innerText];",
                vec![],
            )
            .await
            .unwrap();
        let v = verdict.as_array().unwrap();
        assert_eq!(v[0], serde_json::json!(true), "{page}: a script ran");
        assert_eq!(v[1], serde_json::json!(0), "{page}: an element was made");
        assert_eq!(
            v[2],
            serde_json::json!(0),
            "{page}: a script element was made"
        );
        let text = v[3].as_str().unwrap();
        assert!(text.contains(SCRIPT), "{page}: the text shows: {text}");
    }
    b.goto(&w.url("/approvals")).await.unwrap();
    assert!(
        Web::text(&b, &format!("#req-{} .justification", req.id))
            .await
            .contains(IMG)
    );
    b.close().await.unwrap();
}

/// Every answer carries the strict headers; the session cookie is HttpOnly
/// and SameSite=Lax; admin and audit pages are for staff (others get 404).
#[tokio::test]
async fn headers_cookies_and_staff_pages() {
    let Some(w) = setup().await else { return };
    let r = Web::http().get(w.url("/signin")).send().await.unwrap();
    let h = r.headers();
    let csp = h["content-security-policy"].to_str().unwrap();
    for part in [
        "default-src 'none'",
        "script-src 'self'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    ] {
        assert!(csp.contains(part), "{csp}");
    }
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "no-referrer");
    let b = w.signed_in("S1").await;
    let cookie = b.get_named_cookie("idgov-session").await.unwrap();
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(format!("{:?}", cookie.same_site()), "Some(Lax)");
    // S1 is a security officer (from the provider's groups): admin and audit.
    b.goto(&w.url("/admin")).await.unwrap();
    assert_eq!(Web::text(&b, "h1").await, "Administration");
    screenshot(&b, "admin").await;
    b.goto(&w.url("/audit?action=web.signed_in")).await.unwrap();
    let log = Web::text(&b, "#audit").await;
    assert!(log.contains("user:S1"), "{log}");
    // Everything about one person.
    b.goto(&w.url("/audit?employee=S1")).await.unwrap();
    let about = Web::text(&b, "#audit").await;
    assert!(
        about.contains("web.signed_in") && about.contains("identity:S1"),
        "{about}"
    );
    b.goto(&w.url("/audit?employee=nobody-here")).await.unwrap();
    assert!(Web::text(&b, "main").await.contains("No event matches"));
    Web::click(&b, "#verify").await;
    Web::wait_path(&b, "/audit/verify").await;
    assert!(Web::text(&b, "#verify-result").await.contains("intact"));
    screenshot(&b, "audit").await;
    // An employee without a staff role: the same pages are not found.
    let e = w.signed_in("E2").await;
    for page in ["/admin", "/audit"] {
        e.goto(&w.url(page)).await.unwrap();
        assert_eq!(Web::text(&e, "h1").await, "Not found", "{page}");
    }
    e.close().await.unwrap();
    b.close().await.unwrap();
    let _ = Role::Auditor;
}

/// Sign-in answers are bound to the browser that began the sign-in, match
/// its `state`, and are used once; the development sign-in does not exist
/// on a server with an identity provider.
#[tokio::test]
async fn sign_in_answers_must_belong_to_this_browser_and_are_used_once() {
    let Some(w) = setup().await else { return };
    let http = Web::http();
    // No sign-in was begun here.
    let r = http
        .get(w.url("/auth/callback?code=abc&state=xyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("not begun in this browser")
    );
    // One is begun: the provider is asked with PKCE (S256), state and nonce.
    let r = http
        .get(w.url("/signin/start?next=/approvals"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let to = r.headers()["location"].to_str().unwrap().to_string();
    for part in [
        "code_challenge_method=S256",
        "code_challenge=",
        "state=",
        "nonce=",
        "client_id=idgov-web",
    ] {
        assert!(to.contains(part), "{to}");
    }
    let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Lax"),
        "{set}"
    );
    let login = set.split(';').next().unwrap().to_string();
    // An answer with another state is refused, and uses the sign-in up.
    let r = http
        .get(w.url("/auth/callback?code=abc&state=not-the-one"))
        .header("cookie", &login)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("does not belong"));
    let state = to
        .split(['?', '&'])
        .find_map(|kv| kv.strip_prefix("state="))
        .unwrap();
    let r = http
        .get(w.url(&format!("/auth/callback?code=abc&state={state}")))
        .header("cookie", &login)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("already used"));
    // The development sign-in is not offered.
    let r = http
        .post(w.url("/signin/dev"))
        .header("sec-fetch-site", "same-origin")
        .form(&[("employee_id", "S1"), ("role", "security-officer")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// A security officer reviews a held roster sync in the browser, every
/// change a page at a time (leavers first, hostile names as text), and
/// releases it; an employee cannot open it.
#[tokio::test]
async fn a_held_roster_is_reviewed_page_by_page_and_released() {
    let Some(w) = setup().await else { return };
    let app = w.server.app();
    // Everyone but E4 listed as they are, and 150 joiners: E4 leaves, past
    // the guard's threshold, so the sync is held.
    let mut entries: Vec<idgov_domain::roster::RosterEntry> = Vec::new();
    for id in [
        "B1", "O1", "O2", "F1", "M1", "M2", "S1", "S2", "A1", "E1", "E2", "E3",
    ] {
        let p = app.store.get_identity(id).await.unwrap().unwrap();
        entries.push(idgov_domain::roster::RosterEntry {
            employee_id: id.into(),
            attrs: AttributesPatch {
                display_name: Some(p.attrs.display_name.clone()),
                ..Default::default()
            },
        });
    }
    for j in 0..150 {
        let name = if j == 0 {
            SCRIPT.to_string()
        } else {
            format!("Joiner {j}")
        };
        entries.push(idgov_domain::roster::RosterEntry {
            employee_id: format!("J{j:03}"),
            attrs: AttributesPatch {
                display_name: Some(name),
                department: Some("Sales".into()),
                ..Default::default()
            },
        });
    }
    let out = app
        .sync_roster(roster_sync("web-held", entries), "service:hr")
        .await
        .unwrap();
    let id = out.held_change_id.clone().expect("held by the guard");
    assert_eq!(
        (out.counts.leavers, out.counts.joiners, out.counts.total),
        (1, 150, 151)
    );
    let b = w.signed_in("S1").await;
    b.goto(&w.url("/admin")).await.unwrap();
    Web::click(&b, &format!("#held-{id} a.review")).await;
    Web::wait_path(&b, &format!("/admin/held/{id}")).await;
    assert_eq!(
        Web::text(&b, "#held-count").await,
        "Changes 1–100 of 151, in the order they would apply (leavers first)."
    );
    let first = Web::text(&b, "#held-changes tbody tr").await;
    assert!(first.starts_with("E4 leaver"), "{first}");
    let table = Web::text(&b, "#held-changes").await;
    assert!(
        table.contains(SCRIPT),
        "a hostile name is shown as text: {table}"
    );
    let pwned = b
        .execute("return window.__pwned || 0", vec![])
        .await
        .unwrap();
    assert_eq!(pwned, serde_json::json!(0));
    screenshot(&b, "held").await;
    Web::click(&b, "#next").await;
    for _ in 0..100 {
        if Web::text(&b, "#held-count")
            .await
            .starts_with("Changes 101")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        Web::text(&b, "#held-count").await,
        "Changes 101–151 of 151, in the order they would apply (leavers first)."
    );
    assert!(b.find(Locator::Id("next")).await.is_err(), "the last page");
    assert!(b.find(Locator::Id("prev")).await.is_ok());
    // An employee: the page is not found for them.
    let e = w.signed_in("E2").await;
    e.goto(&w.url(&format!("/admin/held/{id}"))).await.unwrap();
    assert_eq!(Web::text(&e, "h1").await, "Not found");
    e.close().await.unwrap();
    // Released from the page, with a reason.
    b.find(Locator::Css("form.decide input[name=reason]"))
        .await
        .unwrap()
        .send_keys("checked with HR")
        .await
        .unwrap();
    Web::click(&b, "form.decide button[value=release]").await;
    Web::wait_path(&b, "/admin").await;
    for _ in 0..100 {
        if app.store.get_identity("J149").await.unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        app.store.get_identity("E4").await.unwrap().unwrap().status,
        idgov_domain::identity::Status::Terminated
    );
    assert!(app.store.get_identity("J149").await.unwrap().is_some());
    // Decided: the page says so, and no form is offered.
    b.goto(&w.url(&format!("/admin/held/{id}"))).await.unwrap();
    assert!(Web::text(&b, "#held-summary").await.contains("(released)"));
    assert!(b.find(Locator::Css("form.decide")).await.is_err());
    b.close().await.unwrap();
}
