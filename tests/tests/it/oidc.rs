//! Authentication against a real OIDC provider (panva oidc-provider), and
//! mutual TLS.

use crate::common::*;
use base64::Engine;
use idgov_proto::v1 as pb;
use idgov_proto::v1::hr_service_client::HrServiceClient;
use idgov_proto::v1::identity_service_client::IdentityServiceClient;
use idgov_proto::v1::policy_service_client::PolicyServiceClient;
use idgov_tests::oidc::{Key, Provider};
use idgov_tests::server::{Authed, TestServer, start_with_auth};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use std::collections::BTreeMap;
use tonic::Code;

fn auth_toml(issuer: &str) -> String {
    format!(
        r#"
[oidc]
issuer = "{issuer}"
audience = "idgov"
roles_claim = "groups"
leeway_seconds = 0
jwks_refresh_seconds = 0

[oidc.roles]
"idgov-admins" = "it-admin"
"auditors" = "auditor"

[oidc.clients]
"hr-feed" = ["hr-feed"]
"#
    )
}

async fn setup(provider: &Provider) -> Option<TestServer> {
    let s = start_with_auth("sqlite", Some(&auth_toml(&provider.issuer()))).await?;
    let app = s.app();
    for (id, mgr) in [
        ("E1001", None),
        ("E1002", Some("E1001")),
        ("E1003", Some("E1001")),
        ("E2001", None),
    ] {
        let mut p = Person::new(id, "Finance");
        p.manager = mgr;
        hire(app, &p).await;
    }
    Some(s)
}

fn groups() -> BTreeMap<&'static str, Vec<&'static str>> {
    BTreeMap::from([("E2001", vec!["idgov-admins", "unrelated-group"])])
}

async fn as_token(s: &TestServer, token: &str) -> Authed {
    s.channel(Some(token.to_string())).await
}

/// Calls GetPolicy (open to every employee and staff role).
async fn probe(s: &TestServer, token: &str) -> Result<(), tonic::Status> {
    PolicyServiceClient::new(as_token(s, token).await)
        .get_policy(pb::GetPolicyRequest {})
        .await
        .map(|_| ())
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Signs `claims` with the provider's own key.
fn forge(key: &Key, kid: &str, claims: &serde_json::Value) -> String {
    let (alg, enc) = match key.alg.as_str() {
        "RS256" => (
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(key.pem.as_bytes()).unwrap(),
        ),
        "ES256" => (
            Algorithm::ES256,
            EncodingKey::from_ec_pem(key.pem.as_bytes()).unwrap(),
        ),
        _ => (
            Algorithm::EdDSA,
            EncodingKey::from_ed_pem(key.pem.as_bytes()).unwrap(),
        ),
    };
    let mut h = Header::new(alg);
    h.kid = Some(kid.into());
    jsonwebtoken::encode(&h, claims, &enc).unwrap()
}

fn b64(v: &serde_json::Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_tokens_map_to_clients_people_and_roles() {
    let Some(op) = Provider::start("k1", "RS256", &groups(), 300) else {
        return;
    };
    let Some(s) = setup(&op).await else { return };
    // A service client (client credentials) → its configured role.
    let feed = op.client_token("hr-feed", "hr-feed-secret").await;
    let mut hr = HrServiceClient::new(as_token(&s, &feed).await);
    let ev = pb::HrEvent {
        source: "workday".into(),
        event_id: "oidc-1".into(),
        r#type: pb::HrEventType::Hire as i32,
        employee_id: "E3001".into(),
        attributes: Some(pb::PersonAttributes {
            display_name: Some("New Person".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    hr.submit_hr_event(pb::SubmitHrEventRequest { event: Some(ev) })
        .await
        .expect("the HR feed submits");
    let e = PolicyServiceClient::new(as_token(&s, &feed).await)
        .apply_policy(pb::ApplyPolicyRequest {
            document: POLICY.into(),
            dry_run: true,
            reason: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Code::PermissionDenied,
        "the HR feed only submits HR data"
    );

    // A person (authorization code) → their identity and mapped roles.
    let admin = op.user_token("E2001").await;
    let mut ids = IdentityServiceClient::new(as_token(&s, &admin).await);
    let all = ids
        .list_identities(pb::ListIdentitiesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(all.identities.len() >= 5, "it-admin reads everyone");

    // A manager without staff roles reaches their reports only.
    let manager = op.user_token("E1001").await;
    let mut m = IdentityServiceClient::new(as_token(&s, &manager).await);
    let get = |id: &str| pb::GetIdentityRequest {
        employee_id: id.into(),
    };
    assert_eq!(
        m.get_identity(get("E1002"))
            .await
            .unwrap()
            .into_inner()
            .employee_id,
        "E1002"
    );
    assert_eq!(
        m.get_identity(get("E2001")).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    let report = op.user_token("E1002").await;
    let e = IdentityServiceClient::new(as_token(&s, &report).await)
        .get_identity(get("E1003"))
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Code::PermissionDenied,
        "a peer is not reachable by guessing ids"
    );

    // Once an issuer is configured, locally minted development tokens are refused.
    let dev = s.token(&[idgov_authz::Role::ItAdmin], None);
    assert_eq!(
        probe(&s, &dev).await.unwrap_err().code(),
        Code::Unauthenticated
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_expired_and_misdirected_tokens_are_refused() {
    let Some(op) = Provider::start("k1", "RS256", &groups(), 300) else {
        return;
    };
    let Some(s) = setup(&op).await else { return };
    let key = op.keys[0].clone();
    let good = |over: serde_json::Value| {
        let mut c = serde_json::json!({
            "iss": op.issuer(), "aud": "idgov", "sub": "E1001", "client_id": "idgov-cli",
            "iat": now(), "exp": now() + 300,
        });
        if let (Some(c), Some(o)) = (c.as_object_mut(), over.as_object()) {
            for (k, v) in o {
                c.insert(k.clone(), v.clone());
            }
        }
        c
    };
    // The control: correctly signed, correct claims: accepted.
    assert!(
        probe(&s, &forge(&key, "k1", &good(serde_json::json!({}))))
            .await
            .is_ok()
    );
    let real = op.user_token("E1001").await;
    assert!(probe(&s, &real).await.is_ok());

    let parts: Vec<&str> = real.split('.').collect();
    let claims = good(serde_json::json!({"sub": "E2001"}));
    let public_jwk = serde_json::json!({"kty": "RSA", "n": key.jwk["n"], "e": key.jwk["e"]});
    let hs256 = {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("k1".into());
        jsonwebtoken::encode(
            &h,
            &claims,
            &EncodingKey::from_secret(public_jwk.to_string().as_bytes()),
        )
        .unwrap()
    };
    let stranger = op.new_key("k9", "RS256");
    let cases: Vec<(&str, String)> = vec![
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(&serde_json::json!({"alg": "none", "kid": "k1"})),
                b64(&claims)
            ),
        ),
        ("HS256 signed with the provider's public key", hs256),
        (
            "expired",
            forge(&key, "k1", &good(serde_json::json!({"exp": now() - 120}))),
        ),
        (
            "not yet valid",
            forge(&key, "k1", &good(serde_json::json!({"nbf": now() + 300}))),
        ),
        (
            "wrong issuer",
            forge(
                &key,
                "k1",
                &good(serde_json::json!({"iss": "https://evil.example"})),
            ),
        ),
        (
            "wrong audience",
            forge(&key, "k1", &good(serde_json::json!({"aud": "another-api"}))),
        ),
        (
            "unknown key id",
            forge(&stranger, "k9", &good(serde_json::json!({}))),
        ),
        (
            "altered payload",
            format!("{}.{}.{}", parts[0], b64(&claims), parts[2]),
        ),
        ("not a JWT", "not.a.jwt".to_string()),
    ];
    for (what, token) in cases {
        let e = probe(&s, &token).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{what}: {e:?}");
    }

    // A person who left is refused although their token is unexpired.
    let leaver = op.user_token("E1003").await;
    assert!(probe(&s, &leaver).await.is_ok());
    let app = s.app();
    let term = event(
        app,
        idgov_domain::hr::EventKind::Terminate,
        "t-e1003",
        "E1003",
        "",
        Default::default(),
    );
    app.submit_event(term, "service:hr").await.unwrap();
    assert_eq!(
        probe(&s, &leaver).await.unwrap_err().code(),
        Code::Unauthenticated
    );
}

/// Signs a token with a header of our own making.
fn sign_raw(key: &Key, header: &serde_json::Value, claims: &serde_json::Value) -> String {
    let enc = EncodingKey::from_rsa_pem(key.pem.as_bytes()).unwrap();
    let msg = format!("{}.{}", b64(header), b64(claims));
    let sig = jsonwebtoken::crypto::sign(msg.as_bytes(), &enc, Algorithm::RS256).unwrap();
    format!("{msg}.{sig}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_naming_nobody_or_marking_unknown_extensions_critical_are_refused() {
    let Some(op) = Provider::start("k1", "RS256", &groups(), 300) else {
        return;
    };
    let Some(s) = setup(&op).await else { return };
    let key = op.keys[0].clone();
    // A person (signed in through a client) or a client acting for itself.
    let as_client = |sub: &str, client: &str| {
        serde_json::json!({
            "iss": op.issuer(), "aud": "idgov", "sub": sub, "client_id": client,
            "iat": now(), "exp": now() + 300, "groups": ["idgov-admins"],
        })
    };
    let claims = |sub: &str| as_client(sub, "idgov-cli");
    let header = serde_json::json!({"alg": "RS256", "kid": "k1", "typ": "JWT"});
    // Controls, signed the same way: accepted.
    assert!(
        probe(&s, &sign_raw(&key, &header, &claims("E1001")))
            .await
            .is_ok()
    );
    assert!(
        probe(&s, &forge(&key, "k1", &claims("E2001")))
            .await
            .is_ok()
    );

    // A token whose subject is empty or blank names nobody: refused, as a
    // person with roles and as a client.
    for sub in ["", "   ", "\t"] {
        for token in [claims(sub), as_client(sub, sub)] {
            let e = probe(&s, &forge(&key, "k1", &token)).await.unwrap_err();
            assert_eq!(e.code(), Code::Unauthenticated, "sub {sub:?}: {e:?}");
        }
    }
    // `crit` naming an extension idgov does not understand (RFC 7515 4.1.11).
    let mut crit = header.clone();
    crit["crit"] = serde_json::json!(["urn:example:must-check"]);
    crit["urn:example:must-check"] = serde_json::json!(true);
    let e = probe(&s, &sign_raw(&key, &crit, &claims("E1001")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("critical"), "{e:?}");

    // An attacker-sized key id: refused, and never echoed whole. Under the
    // token limit it is an unknown key; over it, an oversized token. Either
    // way the client sees UNAUTHENTICATED (not RESOURCE_EXHAUSTED).
    for len in [5_000, 8 * 1024] {
        let e = probe(&s, &forge(&key, &"k".repeat(len), &claims("E1001")))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "kid of {len}: {e:?}");
        assert!(
            e.message().len() < 400,
            "kid of {len} echoed: {} bytes",
            e.message().len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_is_followed_without_a_restart() {
    let Some(mut op) = Provider::start("k1", "RS256", &groups(), 300) else {
        return;
    };
    let Some(s) = setup(&op).await else { return };
    let before = op.client_token("hr-feed", "hr-feed-secret").await;
    assert!(probe_feed(&s, &before).await.is_ok());
    // The provider rotates to a new key and stops publishing the old one.
    let k2 = op.new_key("k2", "RS256");
    op.rotate(k2, false);
    let after = op.client_token("hr-feed", "hr-feed-secret").await;
    assert!(after.starts_with(
        &b64(&serde_json::json!({"alg": "RS256", "typ": "at+jwt", "kid": "k2"}))[..10]
    ));
    assert!(
        probe_feed(&s, &after).await.is_ok(),
        "the new key is fetched on first sight"
    );
    assert_eq!(
        probe_feed(&s, &before).await.unwrap_err().code(),
        Code::Unauthenticated,
        "the retired key is no longer accepted"
    );
}

async fn probe_feed(s: &TestServer, token: &str) -> Result<(), tonic::Status> {
    HrServiceClient::new(as_token(s, token).await)
        .list_held_changes(pb::ListHeldChangesRequest::default())
        .await
        .map(|_| ())
        .or_else(|e| {
            if e.code() == Code::PermissionDenied {
                Ok(())
            } else {
                Err(e)
            }
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es256_and_eddsa_providers_are_accepted() {
    for alg in ["ES256", "EdDSA"] {
        let Some(op) = Provider::start("e1", alg, &groups(), 300) else {
            return;
        };
        let Some(s) = setup(&op).await else { return };
        let token = op.user_token("E2001").await;
        assert!(probe(&s, &token).await.is_ok(), "{alg}");
    }
}

mod mtls {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

    struct Ca {
        params: CertificateParams,
        key: KeyPair,
        pem: String,
    }

    fn ca(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let pem = p.self_signed(&key).unwrap().pem();
        Ca {
            params: p,
            key,
            pem,
        }
    }

    fn leaf(ca: &Ca, cn: &str, sans: &[&str], usage: ExtendedKeyUsagePurpose) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut p =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![usage];
        let cert = p
            .signed_by(&key, &Issuer::from_params(&ca.params, &ca.key))
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    async fn channel(
        url: &str,
        server_ca: &str,
        client: Option<&(String, String)>,
    ) -> Result<Channel, tonic::transport::Error> {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(server_ca))
            .domain_name("localhost");
        if let Some((cert, key)) = client {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        Channel::from_shared(url.to_string())
            .unwrap()
            .tls_config(tls)?
            .connect()
            .await
    }

    fn hire_request(id: &str) -> pb::SubmitHrEventRequest {
        pb::SubmitHrEventRequest {
            event: Some(pb::HrEvent {
                source: "mtls".into(),
                event_id: format!("hire-{id}"),
                r#type: pb::HrEventType::Hire as i32,
                employee_id: id.into(),
                attributes: Some(pb::PersonAttributes {
                    display_name: Some("P".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn client_certificates_of_the_configured_ca_map_to_roles_and_others_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let server_ca = ca("idgov test server CA");
        let client_ca = ca("idgov test client CA");
        let rogue_ca = ca("somebody else's CA");
        let (server_cert, server_key) = leaf(
            &server_ca,
            "idgov",
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let feed = leaf(
            &client_ca,
            "hr-feed.internal",
            &["hr-feed.internal"],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let rogue = leaf(
            &rogue_ca,
            "hr-feed.internal",
            &["hr-feed.internal"],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let unmapped = leaf(
            &client_ca,
            "printer.internal",
            &["printer.internal"],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let write = |name: &str, body: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, body).unwrap();
            p.display().to_string()
        };
        let toml = format!(
            "[tls]\ncert_file = {:?}\nkey_file = {:?}\nclient_ca_file = {:?}\n[tls.client_roles]\n\"hr-feed.internal\" = [\"hr-feed\"]\n",
            write("server.pem", &server_cert),
            write("server.key", &server_key),
            write("clients-ca.pem", &client_ca.pem)
        );
        let Some(s) = start_with_auth("sqlite", Some(&toml)).await else {
            return;
        };
        assert!(s.url.starts_with("https://"), "{}", s.url);

        // A certificate of the configured CA: its mapped role, and only that.
        let ch = channel(&s.url, &server_ca.pem, Some(&feed))
            .await
            .expect("TLS with a client certificate");
        HrServiceClient::new(ch.clone())
            .submit_hr_event(hire_request("M1"))
            .await
            .expect("hr-feed by certificate");
        let e = PolicyServiceClient::new(ch)
            .get_policy(pb::GetPolicyRequest {})
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);

        // Another CA's certificate with the same name is refused.
        let refused = match channel(&s.url, &server_ca.pem, Some(&rogue)).await {
            Err(_) => true,
            Ok(ch) => HrServiceClient::new(ch)
                .submit_hr_event(hire_request("M2"))
                .await
                .is_err(),
        };
        assert!(refused, "a certificate of another CA must not be accepted");

        // A valid certificate nobody mapped, and no certificate at all, are unauthenticated.
        let ch = channel(&s.url, &server_ca.pem, Some(&unmapped))
            .await
            .unwrap();
        let e = HrServiceClient::new(ch)
            .submit_hr_event(hire_request("M3"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
        let ch = channel(&s.url, &server_ca.pem, None).await.unwrap();
        let e = HrServiceClient::new(ch.clone())
            .submit_hr_event(hire_request("M4"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);

        // Bearer tokens still work over TLS.
        let token: tonic::metadata::MetadataValue<_> =
            format!("Bearer {}", s.token(&[idgov_authz::Role::Auditor], None))
                .parse()
                .unwrap();
        let mut req = tonic::Request::new(pb::GetPolicyRequest {});
        req.metadata_mut().insert("authorization", token);
        PolicyServiceClient::new(ch)
            .get_policy(req)
            .await
            .expect("bearer over TLS");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_can_be_named_by_their_email_claim() {
    let Some(op) = Provider::start("k1", "RS256", &groups(), 300) else {
        return;
    };
    let toml = auth_toml(&op.issuer()).replace(
        "roles_claim = \"groups\"",
        "roles_claim = \"groups\"\nuser_claim = \"email\"\nuser_claim_is = \"email\"",
    );
    let Some(s) = start_with_auth("sqlite", Some(&toml)).await else {
        return;
    };
    let app = s.app();
    for (id, mgr) in [("E1001", None), ("E1002", Some("E1001"))] {
        let mut p = Person::new(id, "Finance").patch();
        p.email = Some(format!("{}@Example.com", id.to_lowercase()));
        p.manager_id = mgr.map(|m| Some(m.to_string()));
        app.submit_event(
            event(
                app,
                idgov_domain::hr::EventKind::Hire,
                &format!("h-{id}"),
                id,
                "",
                p,
            ),
            "service:hr",
        )
        .await
        .unwrap();
    }
    // The token carries e1001@example.com: it is E1001, manager of E1002.
    let token = op.user_token("E1001").await;
    let mut ids = IdentityServiceClient::new(as_token(&s, &token).await);
    let r = ids
        .get_identity(pb::GetIdentityRequest {
            employee_id: "E1002".into(),
        })
        .await
        .unwrap();
    assert_eq!(r.into_inner().manager_employee_id, "E1001");
    // Nobody in HR has E9999's email: no relationships, nothing to read.
    let stranger = op.user_token("E9999").await;
    let e = IdentityServiceClient::new(as_token(&s, &stranger).await)
        .get_identity(pb::GetIdentityRequest {
            employee_id: "E1002".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_key_ids_cannot_make_idgov_hammer_the_provider() {
    let Some(mut op) = Provider::start("k1", "RS256", &groups(), 300) else {
        return;
    };
    let toml =
        auth_toml(&op.issuer()).replace("jwks_refresh_seconds = 0", "jwks_refresh_seconds = 3600");
    let Some(s) = start_with_auth("sqlite", Some(&toml)).await else {
        return;
    };
    let k2 = op.new_key("k2", "RS256");
    op.rotate(k2, false);
    let t2 = op.client_token("hr-feed", "hr-feed-secret").await;
    assert!(
        probe_feed(&s, &t2).await.is_ok(),
        "the first unknown key id triggers a refresh"
    );
    // Another key within the refresh interval is not fetched (and so not
    // accepted) until the interval has passed.
    let k3 = op.new_key("k3", "RS256");
    op.rotate(k3, false);
    let t3 = op.client_token("hr-feed", "hr-feed-secret").await;
    for _ in 0..20 {
        assert_eq!(
            probe_feed(&s, &t3).await.unwrap_err().code(),
            Code::Unauthenticated
        );
    }
}
