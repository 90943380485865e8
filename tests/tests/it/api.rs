//! The gRPC API end to end: authentication, the authorization matrix (every
//! RPC called by every role), object-level checks, error details, health and
//! reflection.

use crate::common::*;
use base64::Engine;
use idgov_authz::{Grant, Role, Rpc, check_rpc};
use idgov_domain::hr::EventKind;
use idgov_domain::identity::AttributesPatch;
use idgov_proto::v1 as pb;
use idgov_proto::v1::audit_service_client::AuditServiceClient;
use idgov_proto::v1::hr_service_client::HrServiceClient;
use idgov_proto::v1::identity_service_client::IdentityServiceClient;
use idgov_proto::v1::policy_service_client::PolicyServiceClient;
use idgov_tests::server::{Authed, TestServer, start};
use std::sync::atomic::{AtomicU64, Ordering};
use tonic::{Code, Status};
use tonic_types::StatusExt;

static N: AtomicU64 = AtomicU64::new(0);

/// A server with the test policy, a manager chain and some people.
async fn setup(backend: &'static str) -> Option<TestServer> {
    let s = start(backend).await?;
    let app = s.app();
    with_policy(app).await;
    for (id, mgr) in [
        ("M1", None),
        ("E1", Some("M1")),
        ("M2", None),
        ("E2", Some("M2")),
    ] {
        let mut p = Person::new(id, "Finance");
        p.manager = mgr;
        hire(app, &p).await;
    }
    Some(s)
}

/// Calls `rpc` with a minimal well-formed request.
async fn call(ch: Authed, rpc: Rpc) -> Result<(), Status> {
    let n = N.fetch_add(1, Ordering::Relaxed);
    let mut hr = HrServiceClient::new(ch.clone());
    let mut ids = IdentityServiceClient::new(ch.clone());
    let mut pol = PolicyServiceClient::new(ch.clone());
    let mut audit = AuditServiceClient::new(ch.clone());
    let mut prov =
        idgov_proto::v1::provisioning_service_client::ProvisioningServiceClient::new(ch.clone());
    let mut dir =
        idgov_proto::v1::directory_service_client::DirectoryServiceClient::new(ch.clone());
    let mut acc = idgov_proto::v1::access_service_client::AccessServiceClient::new(ch.clone());
    let mut cmp = idgov_proto::v1::campaign_service_client::CampaignServiceClient::new(ch);
    match rpc {
        Rpc::SubmitHrEvent => hr
            .submit_hr_event(pb::SubmitHrEventRequest {
                event: Some(pb::HrEvent {
                    source: "matrix".into(),
                    event_id: format!("m-{n}"),
                    r#type: pb::HrEventType::Hire as i32,
                    employee_id: format!("X{n}"),
                    attributes: Some(pb::PersonAttributes {
                        display_name: Some("X".into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            })
            .await
            .map(|_| ()),
        Rpc::SyncRoster => {
            let msgs = vec![
                pb::SyncRosterRequest {
                    item: Some(pb::sync_roster_request::Item::Header(pb::RosterHeader {
                        source: "matrix".into(),
                        sync_id: format!("s-{n}"),
                        dry_run: true,
                        ..Default::default()
                    })),
                },
                pb::SyncRosterRequest {
                    item: Some(pb::sync_roster_request::Item::Entry(pb::RosterEntry {
                        employee_id: "O1".into(),
                        attributes: Some(pb::PersonAttributes {
                            display_name: Some("O".into()),
                            ..Default::default()
                        }),
                    })),
                },
            ];
            hr.sync_roster(tokio_stream::iter(msgs)).await.map(|_| ())
        }
        Rpc::ListHrEvents => hr
            .list_hr_events(pb::ListHrEventsRequest::default())
            .await
            .map(|_| ()),
        Rpc::ListHeldChanges => hr
            .list_held_changes(pb::ListHeldChangesRequest::default())
            .await
            .map(|_| ()),
        Rpc::ListHeldRosterChanges => hr
            .list_held_roster_changes(pb::ListHeldRosterChangesRequest {
                id: "none".into(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
        Rpc::ListRosterPreview => hr
            .list_roster_preview(pb::ListRosterPreviewRequest {
                preview_id: "none".into(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
        Rpc::ReleaseHeldChange => hr
            .release_held_change(pb::ReleaseHeldChangeRequest {
                id: "none".into(),
                reason: "r".into(),
            })
            .await
            .map(|_| ()),
        Rpc::DiscardHeldChange => hr
            .discard_held_change(pb::DiscardHeldChangeRequest {
                id: "none".into(),
                reason: "r".into(),
            })
            .await
            .map(|_| ()),
        Rpc::GetIdentity => ids
            .get_identity(pb::GetIdentityRequest {
                employee_id: "E1".into(),
            })
            .await
            .map(|_| ()),
        Rpc::ListIdentities => ids
            .list_identities(pb::ListIdentitiesRequest::default())
            .await
            .map(|_| ()),
        Rpc::ListGrants => ids
            .list_grants(pb::ListGrantsRequest {
                employee_id: "E1".into(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
        Rpc::GetPolicy => pol.get_policy(pb::GetPolicyRequest {}).await.map(|_| ()),
        Rpc::ApplyPolicy => pol
            .apply_policy(pb::ApplyPolicyRequest {
                document: POLICY.into(),
                dry_run: true,
                reason: "r".into(),
            })
            .await
            .map(|_| ()),
        Rpc::ListEntitlements => pol
            .list_entitlements(pb::ListEntitlementsRequest::default())
            .await
            .map(|_| ()),
        Rpc::ListRoles => pol
            .list_roles(pb::ListRolesRequest::default())
            .await
            .map(|_| ()),
        Rpc::ListAuditEvents => audit
            .list_audit_events(pb::ListAuditEventsRequest::default())
            .await
            .map(|_| ()),
        Rpc::VerifyAuditChain => audit
            .verify_audit_chain(pb::VerifyAuditChainRequest {})
            .await
            .map(|_| ()),
        Rpc::ListWebhookSubscriptions => audit
            .list_webhook_subscriptions(pb::ListWebhookSubscriptionsRequest {})
            .await
            .map(|_| ()),
        Rpc::ListWebhookDeliveries => audit
            .list_webhook_deliveries(pb::ListWebhookDeliveriesRequest {
                subscription_id: "none".into(),
                limit: 10,
            })
            .await
            .map(|_| ()),
        Rpc::RedeliverWebhook => audit
            .redeliver_webhook(pb::RedeliverWebhookRequest {
                subscription_id: "none".into(),
                from_seq: 0,
                reason: "r".into(),
            })
            .await
            .map(|_| ()),
        Rpc::CreateWebhookSubscription => audit
            .create_webhook_subscription(pb::CreateWebhookSubscriptionRequest {
                id: String::new(),
                url: "https://203.0.113.9/hook".into(),
                events: vec!["security".into()],
            })
            .await
            .map(|_| ()),
        Rpc::DeleteWebhookSubscription => audit
            .delete_webhook_subscription(pb::DeleteWebhookSubscriptionRequest {
                subscription_id: "none".into(),
                reason: "r".into(),
            })
            .await
            .map(|_| ()),
        Rpc::RotateWebhookSecret => audit
            .rotate_webhook_secret(pb::RotateWebhookSecretRequest {
                subscription_id: "none".into(),
            })
            .await
            .map(|_| ()),
        Rpc::ListDirectoryOperations => prov
            .list_directory_operations(pb::ListDirectoryOperationsRequest::default())
            .await
            .map(|_| ()),
        Rpc::RetryDirectoryOperation => prov
            .retry_directory_operation(pb::RetryDirectoryOperationRequest { id: 1 })
            .await
            .map(|_| ()),
        Rpc::RunDirectorySync => dir
            .run_directory_sync(pb::RunDirectorySyncRequest { dry_run: true })
            .await
            .map(|_| ()),
        Rpc::GetDirectorySync => dir
            .get_directory_sync(pb::GetDirectorySyncRequest { id: "none".into() })
            .await
            .map(|_| ()),
        Rpc::ListDrift => dir
            .list_drift(pb::ListDriftRequest::default())
            .await
            .map(|_| ()),
        Rpc::CreateAccessRequest => acc
            .create_access_request(pb::CreateAccessRequestRequest {
                target_kind: pb::AccessTargetKind::Entitlement as i32,
                target_id: "wiki".into(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
        Rpc::GetAccessRequest => acc
            .get_access_request(pb::GetAccessRequestRequest { id: "none".into() })
            .await
            .map(|_| ()),
        Rpc::ListAccessRequests => acc
            .list_access_requests(pb::ListAccessRequestsRequest::default())
            .await
            .map(|_| ()),
        Rpc::ApproveAccessRequest => acc
            .approve_access_request(pb::DecideAccessRequestRequest {
                id: "none".into(),
                comment: String::new(),
            })
            .await
            .map(|_| ()),
        Rpc::DenyAccessRequest => acc
            .deny_access_request(pb::DecideAccessRequestRequest {
                id: "none".into(),
                comment: "no".into(),
            })
            .await
            .map(|_| ()),
        Rpc::CancelAccessRequest => acc
            .cancel_access_request(pb::CancelAccessRequestRequest {
                id: "none".into(),
                reason: "r".into(),
            })
            .await
            .map(|_| ()),
        Rpc::RevokeGrant => acc
            .revoke_grant(pb::RevokeGrantRequest {
                grant_id: "none".into(),
                reason: "r".into(),
            })
            .await
            .map(|_| ()),
        Rpc::ListExpiringGrants => acc
            .list_expiring_grants(pb::ListExpiringGrantsRequest::default())
            .await
            .map(|_| ()),
        Rpc::ListSodViolations => acc
            .list_sod_violations(pb::ListSodViolationsRequest::default())
            .await
            .map(|_| ()),
        Rpc::RunSodCheck => acc
            .run_sod_check(pb::RunSodCheckRequest {})
            .await
            .map(|_| ()),
        Rpc::ListSodExceptions => acc
            .list_sod_exceptions(pb::ListSodExceptionsRequest::default())
            .await
            .map(|_| ()),
        Rpc::GrantSodException => acc
            .grant_sod_exception(pb::GrantSodExceptionRequest {
                employee_id: "E1".into(),
                rule_id: "none".into(),
                justification: "j".into(),
                days: 1,
            })
            .await
            .map(|_| ()),
        Rpc::PreviewCampaign => cmp
            .preview_campaign(pb::PreviewCampaignRequest {
                definition_id: "none".into(),
            })
            .await
            .map(|_| ()),
        Rpc::StartCampaign => cmp
            .start_campaign(pb::StartCampaignRequest {
                definition_id: "none".into(),
            })
            .await
            .map(|_| ()),
        Rpc::GetCampaign => cmp
            .get_campaign(pb::GetCampaignRequest { id: "none".into() })
            .await
            .map(|_| ()),
        Rpc::ListCampaigns => cmp
            .list_campaigns(pb::ListCampaignsRequest::default())
            .await
            .map(|_| ()),
        Rpc::ListReviewItems => cmp
            .list_review_items(pb::ListReviewItemsRequest::default())
            .await
            .map(|_| ()),
        Rpc::DecideReviewItems => cmp
            .decide_review_items(pb::DecideReviewItemsRequest {
                decisions: vec![pb::ReviewDecision {
                    item_id: "none".into(),
                    verdict: pb::ReviewVerdict::Certify as i32,
                    justification: String::new(),
                }],
            })
            .await
            .map(|_| ()),
        Rpc::ReassignReviewItem => cmp
            .reassign_review_item(pb::ReassignReviewItemRequest {
                item_id: "none".into(),
                to_employee_id: "E1".into(),
                reason: "r".into(),
            })
            .await
            .map(|_| ()),
        Rpc::CloseCampaign => cmp
            .close_campaign(pb::CloseCampaignRequest { id: "none".into() })
            .await
            .map(|_| ()),
        Rpc::GetCampaignReport => cmp
            .get_campaign_report(pb::GetCampaignReportRequest { id: "none".into() })
            .await
            .map(|_| ()),
        Rpc::ExportCampaignEvidence => cmp
            .export_campaign_evidence(pb::ExportCampaignEvidenceRequest { id: "none".into() })
            .await
            .map(|_| ()),
    }
}

fn refused(r: &Result<(), Status>) -> Option<Code> {
    match r {
        Err(s) if matches!(s.code(), Code::PermissionDenied | Code::Unauthenticated) => {
            Some(s.code())
        }
        _ => None,
    }
}

async fn matrix(backend: &'static str) {
    let Some(s) = setup(backend).await else {
        return;
    };
    let role_sets: Vec<Vec<Role>> = std::iter::once(vec![])
        .chain(Role::ALL.iter().map(|r| vec![*r]))
        .collect();
    let mut checked = 0;
    for roles in &role_sets {
        let ch = s.channel(Some(s.token(roles, None))).await;
        for rpc in Rpc::ALL {
            let caller = idgov_authz::Caller {
                subject: "t".into(),
                employee_id: None,
                roles: roles.iter().copied().collect(),
                method: "dev".into(),
            };
            let expected_allowed =
                matches!(check_rpc(&caller, *rpc), Ok(a) if matches!(a.grant, Grant::Full { .. }));
            let r = call(ch.clone(), *rpc).await;
            if expected_allowed {
                assert_eq!(
                    refused(&r),
                    None,
                    "{roles:?} calling {rpc:?} was refused: {r:?}"
                );
                if let Err(e) = &r {
                    // Allowed calls may still find nothing to act on (no sync yet,
                    // no directory configured).
                    assert!(
                        matches!(
                            e.code(),
                            Code::NotFound | Code::FailedPrecondition | Code::InvalidArgument
                        ),
                        "{roles:?} {rpc:?}: {e:?}"
                    );
                }
            } else {
                assert_eq!(
                    refused(&r),
                    Some(Code::PermissionDenied),
                    "{roles:?} calling {rpc:?}: {r:?}"
                );
                // The table refused a role: the answer says so, so a
                // client tells it from a rule that no role changes.
                let by = r.as_ref().err().and_then(|e| {
                    e.get_error_details()
                        .error_info()
                        .and_then(|i| i.metadata.get("denied_by").cloned())
                });
                assert_eq!(by.as_deref(), Some("role"), "{roles:?} calling {rpc:?}");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 5 * Rpc::ALL.len());
    // Without credentials, or with garbage, nothing is allowed.
    let none = s.channel(None).await;
    let garbage = s.channel(Some("not.a.token".into())).await;
    for rpc in Rpc::ALL {
        assert_eq!(
            refused(&call(none.clone(), *rpc).await),
            Some(Code::Unauthenticated),
            "{rpc:?}"
        );
        assert_eq!(
            refused(&call(garbage.clone(), *rpc).await),
            Some(Code::Unauthenticated),
            "{rpc:?}"
        );
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_by_every_role_sqlite() {
    matrix("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_by_every_role_postgres() {
    matrix("postgres").await;
}

fn b64(v: &serde_json::Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_expired_and_departed_tokens_are_refused() {
    let Some(s) = setup("sqlite").await else {
        return;
    };
    let good = s.token(&[Role::Auditor], None);
    let now = chrono::Utc::now().timestamp();
    let claims = serde_json::json!({
        "iss": "idgov-dev", "aud": "idgov-dev", "sub": "mallory", "roles": ["it-admin"], "iat": now, "exp": now + 3600
    });
    let alg_none = format!(
        "{}.{}.",
        b64(&serde_json::json!({"alg": "none", "typ": "JWT"})),
        b64(&claims)
    );
    let parts: Vec<&str> = good.split('.').collect();
    let altered = format!("{}.{}.{}", parts[0], b64(&claims), parts[2]);
    let other_key =
        idgov_server::auth::dev::DevAuth::load_or_create(tempfile::tempdir().unwrap().path())
            .unwrap();
    let foreign = other_key
        .mint(
            "mallory",
            None,
            &[Role::ItAdmin],
            chrono::Duration::hours(1),
        )
        .unwrap();
    let expired = s
        .dev
        .mint("alice", None, &[Role::Auditor], chrono::Duration::hours(-1))
        .unwrap();
    for (what, token) in [
        ("alg none", alg_none),
        ("altered payload", altered),
        ("another key", foreign),
        ("expired", expired),
    ] {
        let r = call(s.channel(Some(token)).await, Rpc::VerifyAuditChain).await;
        assert_eq!(refused(&r), Some(Code::Unauthenticated), "{what}: {r:?}");
    }
    assert_eq!(
        refused(&call(s.channel(Some(good)).await, Rpc::VerifyAuditChain).await),
        None
    );

    // A person who left is refused even with an unexpired token.
    let token = s.token(&[], Some("E1"));
    assert_eq!(
        refused(&call(s.channel(Some(token.clone())).await, Rpc::GetPolicy).await),
        None
    );
    let app = s.app();
    app.submit_event(
        event(
            app,
            EventKind::Terminate,
            "t-e1",
            "E1",
            "",
            AttributesPatch::default(),
        ),
        "service:hr",
    )
    .await
    .unwrap();
    let r = call(s.channel(Some(token)).await, Rpc::GetPolicy).await;
    assert_eq!(refused(&r), Some(Code::Unauthenticated), "{r:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_reaches_only_their_reports() {
    let Some(s) = setup("sqlite").await else {
        return;
    };
    let mut m1 = s.ids(&[], Some("M1")).await;
    let get = |id: &str| pb::GetIdentityRequest {
        employee_id: id.into(),
    };
    assert_eq!(
        m1.get_identity(get("E1"))
            .await
            .unwrap()
            .into_inner()
            .manager_employee_id,
        "M1"
    );
    assert_eq!(
        m1.get_identity(get("M1"))
            .await
            .unwrap()
            .into_inner()
            .employee_id,
        "M1",
        "self"
    );
    for other in ["E2", "M2", "O1", "E999"] {
        let e = m1.get_identity(get(other)).await.unwrap_err();
        assert_eq!(
            e.code(),
            Code::PermissionDenied,
            "{other}: unknown and unrelated look the same"
        );
    }
    let grants = |id: &str| pb::ListGrantsRequest {
        employee_id: id.into(),
        ..Default::default()
    };
    assert_eq!(
        m1.list_grants(grants("E1"))
            .await
            .unwrap()
            .into_inner()
            .grants
            .len(),
        3
    );
    assert_eq!(
        m1.list_grants(grants("E2")).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    let mine = m1
        .list_identities(pb::ListIdentitiesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<_> = mine
        .identities
        .iter()
        .map(|i| i.employee_id.as_str())
        .collect();
    assert_eq!(ids, ["E1"], "a manager lists their own reports");
    let theirs = pb::ListIdentitiesRequest {
        manager_employee_id: "M2".into(),
        ..Default::default()
    };
    assert_eq!(
        m1.list_identities(theirs).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    // A report cannot read their manager, nor a peer.
    let mut e1 = s.ids(&[], Some("E1")).await;
    assert_eq!(
        e1.get_identity(get("M1")).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    assert_eq!(
        e1.get_identity(get("E1"))
            .await
            .unwrap()
            .into_inner()
            .employee_id,
        "E1"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_answered_field_by_field() {
    let Some(s) = setup("sqlite").await else {
        return;
    };
    let mut hr = s.hr(&[Role::HrFeed]).await;
    let hostile = pb::SubmitHrEventRequest {
        event: Some(pb::HrEvent {
            source: "hr".into(),
            event_id: "x\u{0}y".into(),
            r#type: 42,
            employee_id: "*)(uid=*".into(),
            effective_at: "yesterday-ish".into(),
            ..Default::default()
        }),
    };
    let e = hr.submit_hr_event(hostile).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(
        violated_fields(&e),
        ["event.type"],
        "the enum is checked first"
    );
    let e = hr
        .submit_hr_event(pb::SubmitHrEventRequest {
            event: Some(pb::HrEvent {
                source: "hr".into(),
                event_id: "x\u{0}y".into(),
                r#type: pb::HrEventType::Hire as i32,
                employee_id: "cn=x,dc=evil".into(),
                effective_at: "yesterday-ish".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    let d = e.get_error_details();
    assert_eq!(
        violated_fields(&e),
        [
            "event.event_id",
            "event.employee_id",
            "event.effective_at",
            "event.attributes.display_name"
        ]
    );
    assert_eq!(d.error_info().unwrap().reason, "IDGOV_INVALID_ARGUMENT");

    // A roster stream must start with its header.
    let entry = pb::SyncRosterRequest {
        item: Some(pb::sync_roster_request::Item::Entry(pb::RosterEntry {
            employee_id: "E1".into(),
            attributes: None,
        })),
    };
    let e = hr
        .sync_roster(tokio_stream::iter(vec![entry]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    // A bad page token is refused, not misread.
    let mut ids = s.ids(&[Role::Auditor], None).await;
    let e = ids
        .list_identities(pb::ListIdentitiesRequest {
            page_token: "garbage".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_page_through_everything() {
    let Some(s) = setup("sqlite").await else {
        return;
    };
    for i in 0..25 {
        hire(s.app(), &Person::new(&format!("P{i:02}"), "Sales")).await;
    }
    let mut ids = s.ids(&[Role::Auditor], None).await;
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let r = ids
            .list_identities(pb::ListIdentitiesRequest {
                page_size: 7,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(r.identities.len() <= 7);
        seen.extend(r.identities.into_iter().map(|i| i.employee_id));
        token = r.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(seen.len(), 31, "25 + 4 + 2 owners, each once");
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, seen);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_answer_without_credentials() {
    let Some(s) = start("sqlite").await else {
        return;
    };
    let ch = tonic::transport::Channel::from_shared(s.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
    for service in ["", "idgov.v1.HrService"] {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.status(),
            tonic_health::pb::health_check_response::ServingStatus::Serving
        );
    }
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut refl = ServerReflectionClient::new(ch);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = refl
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let msg = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else {
        panic!("{msg:?}")
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    for svc in [
        "idgov.v1.HrService",
        "idgov.v1.IdentityService",
        "idgov.v1.PolicyService",
        "idgov.v1.AuditService",
        "idgov.v1.ProvisioningService",
        "idgov.v1.DirectoryService",
        "idgov.v1.AccessService",
        "idgov.v1.CampaignService",
        "grpc.health.v1.Health",
    ] {
        assert!(names.contains(&svc), "{names:?}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_database() {
    let Some(s) = start("postgres").await else {
        return;
    };
    let mut health = s.health().await;
    let named =
        |h: &mut tonic_health::pb::health_client::HealthClient<tonic::transport::Channel>,
         service: &'static str| {
            let mut h = h.clone();
            async move {
                h.check(tonic_health::pb::HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap()
                .into_inner()
                .status()
            }
        };
    let status = |h: &mut tonic_health::pb::health_client::HealthClient<
        tonic::transport::Channel,
    >| { named(h, "") };
    use tonic_health::pb::health_check_response::ServingStatus;
    assert_eq!(status(&mut health).await, ServingStatus::Serving);
    // The database goes away under the running server.
    let url = s.database_url.clone().unwrap();
    let name = url.rsplit('/').next().unwrap().to_string();
    let admin = url.replace(&format!("/{name}"), "/postgres");
    let mut c = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE {name} WITH (FORCE)"
    )))
    .execute(&mut c)
    .await
    .unwrap();
    let mut seen = ServingStatus::Serving;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        seen = status(&mut health).await;
        if seen == ServingStatus::NotServing {
            break;
        }
    }
    assert_eq!(seen, ServingStatus::NotServing);
    for service in [
        "idgov.v1.HrService",
        "idgov.v1.IdentityService",
        "idgov.v1.PolicyService",
        "idgov.v1.AuditService",
        "idgov.v1.ProvisioningService",
        "idgov.v1.DirectoryService",
    ] {
        assert_eq!(
            named(&mut health, service).await,
            ServingStatus::NotServing,
            "{service:?} goes down with the database too"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn development_mode_refuses_a_public_listen_address() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = idgov_server::ServeConfig {
        listen: "0.0.0.0:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    };
    let clock = std::sync::Arc::new(idgov_server::SystemClock);
    let err = idgov_server::serve::start(cfg, clock)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("loopback"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_calls_are_audited_in_aggregate_and_a_burst_raises_a_security_event() {
    let Some(s) = setup("sqlite").await else {
        return;
    };
    let auditor = s.channel(Some(s.token(&[Role::Auditor], None))).await;
    for _ in 0..60 {
        let r = call(auditor.clone(), Rpc::ApplyPolicy).await;
        assert_eq!(refused(&r), Some(Code::PermissionDenied));
    }
    let garbage = s.channel(Some("garbage".into())).await;
    for _ in 0..5 {
        assert_eq!(
            refused(&call(garbage.clone(), Rpc::VerifyAuditChain).await),
            Some(Code::Unauthenticated)
        );
    }
    let mut m1 = s.ids(&[], Some("M1")).await;
    for _ in 0..3 {
        let e = m1
            .get_identity(pb::GetIdentityRequest {
                employee_id: "E2".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
    }
    let app = s.app();
    assert_eq!(app.flush_denials().await.unwrap(), 68);
    let events = app
        .store
        .list_audit_events(&idgov_store::AuditFilter::default(), 0, 100_000)
        .await
        .unwrap();
    let mut denied: Vec<(String, String, i64)> = events
        .iter()
        .filter(|e| e.action == "access.denied")
        .map(|e| {
            let d: serde_json::Value = serde_json::from_str(&e.detail).unwrap();
            (
                e.actor.clone(),
                e.target.clone(),
                d["count"].as_i64().unwrap(),
            )
        })
        .collect();
    denied.sort();
    let rpc = |r: Rpc| format!("rpc:{}", r.path());
    assert_eq!(
        denied,
        [
            ("service:test-user".to_string(), rpc(Rpc::ApplyPolicy), 60),
            ("unknown".to_string(), rpc(Rpc::VerifyAuditChain), 5),
            ("user:M1".to_string(), rpc(Rpc::GetIdentity), 3),
        ],
        "one event per caller, RPC and reason, with a count"
    );
    let burst: Vec<_> = events
        .iter()
        .filter(|e| e.action == "access.denied_burst")
        .collect();
    assert_eq!(burst.len(), 1);
    assert!(burst[0].security);
    assert_eq!(
        app.flush_denials().await.unwrap(),
        0,
        "a flush writes each denial once"
    );
}

/// The full status a call ends with: code, message and details, as bytes.
fn fingerprint(s: &Status) -> (Code, String, Vec<u8>) {
    (s.code(), s.message().to_string(), s.details().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_and_missing_look_the_same_byte_for_byte() {
    let Some(s) = setup("sqlite").await else {
        return;
    };
    // E1 (an employee) and M1 (E1's manager) probe E2 (M2's report, out of
    // their reach) and E9 (nobody).
    for me in ["E1", "M1"] {
        let ch = s.channel(Some(s.token(&[], Some(me)))).await;
        let mut ids = IdentityServiceClient::new(ch);
        let get = |id: &str| pb::GetIdentityRequest {
            employee_id: id.into(),
        };
        let hidden = ids.get_identity(get("E2")).await.unwrap_err();
        let missing = ids.get_identity(get("E9")).await.unwrap_err();
        assert_eq!(hidden.code(), Code::PermissionDenied);
        assert_eq!(
            fingerprint(&hidden),
            fingerprint(&missing),
            "GetIdentity as {me}"
        );
        let grants = |id: &str| pb::ListGrantsRequest {
            employee_id: id.into(),
            ..Default::default()
        };
        let hidden = ids.list_grants(grants("E2")).await.unwrap_err();
        let missing = ids.list_grants(grants("E9")).await.unwrap_err();
        assert_eq!(
            fingerprint(&hidden),
            fingerprint(&missing),
            "ListGrants as {me}"
        );
        let by = |m: &str| pb::ListIdentitiesRequest {
            manager_employee_id: m.into(),
            ..Default::default()
        };
        let hidden = ids.list_identities(by("M2")).await.unwrap_err();
        let missing = ids.list_identities(by("M9")).await.unwrap_err();
        assert_eq!(
            fingerprint(&hidden),
            fingerprint(&missing),
            "ListIdentities as {me}"
        );
    }
    // The control: what is in reach answers.
    let ch = s.channel(Some(s.token(&[], Some("M1")))).await;
    IdentityServiceClient::new(ch)
        .get_identity(pb::GetIdentityRequest {
            employee_id: "E1".into(),
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_cannot_be_named_is_refused() {
    let Some(s) = setup("sqlite").await else {
        return;
    };
    let mint = |subject: &str, employee: Option<&str>| {
        s.dev
            .mint(
                subject,
                employee,
                &[Role::ItAdmin],
                chrono::Duration::hours(1),
            )
            .unwrap()
    };
    for (subject, employee) in [
        ("", None),
        ("   ", None),
        ("bad\u{7}name", None),
        ("ok", Some("")),
        ("ok", Some("*)(uid=*")),
    ] {
        let ch = s.channel(Some(mint(subject, employee))).await;
        let e = PolicyServiceClient::new(ch)
            .get_policy(pb::GetPolicyRequest {})
            .await
            .unwrap_err();
        assert_eq!(
            e.code(),
            Code::Unauthenticated,
            "{subject:?}/{employee:?}: {e:?}"
        );
    }
    // The control.
    let ch = s.channel(Some(mint("admin-1", None))).await;
    PolicyServiceClient::new(ch)
        .get_policy(pb::GetPolicyRequest {})
        .await
        .unwrap();
    // A policy applied by a nameless caller never reaches the audit log.
    let audit = s
        .app()
        .store
        .list_audit_events(&Default::default(), 0, 10_000)
        .await
        .unwrap();
    assert!(
        audit
            .iter()
            .all(|e| e.actor != "service:" && e.actor != "user:")
    );
}

/// Prometheus metrics and readiness on the same port, read over plain HTTP
/// as a scraper and an orchestrator would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_readiness_answer_on_the_same_port() {
    let Some(s) = start("sqlite").await else {
        return;
    };
    let app = s.app();
    with_policy(app).await;
    for id in ["E1", "E2", "E3"] {
        hire(app, &Person::new(id, "Finance")).await;
    }
    // The same hire again: a duplicate.
    hire(app, &Person::new("E1", "Finance")).await;
    // A call without credentials is refused and counted.
    let mut ids = IdentityServiceClient::new(s.channel(None).await);
    let e = ids
        .get_identity(pb::GetIdentityRequest {
            employee_id: "E1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let http = reqwest::Client::new();
    let get = |path: &str| {
        let url = format!("{}{path}", s.url);
        let http = http.clone();
        async move {
            let r = http.get(url).send().await.unwrap();
            let ct = r
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            (r.status().as_u16(), ct, r.text().await.unwrap())
        }
    };
    let (status, ct, text) = get("/metrics").await;
    assert_eq!(status, 200);
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    let value = |needle: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(needle))
            .unwrap_or_else(|| panic!("{needle} in\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    // O1, O2 (with_policy), E1, E2, E3 applied; the repeat of E1 a duplicate.
    assert_eq!(
        value("idgov_hr_events_total{type=\"hire\",outcome=\"applied\"}"),
        5.0
    );
    assert_eq!(
        value("idgov_hr_events_total{type=\"hire\",outcome=\"duplicate\"}"),
        1.0
    );
    assert_eq!(value("idgov_hr_event_duration_seconds_count"), 6.0);
    assert_eq!(
        value("idgov_denied_calls_total{kind=\"unauthenticated\"}"),
        1.0
    );
    assert!(value("idgov_audit_events ") > 5.0);
    assert_eq!(value("idgov_directory_operations{state=\"pending\"}"), 0.0);
    assert_eq!(value("idgov_review_items_open "), 0.0);
    let (status, _, body) = get("/readyz").await;
    assert_eq!((status, body.trim()), (200, "ready: the database answers"));
    assert_eq!(get("/healthz").await.0, 200);
    let (status, _, body) = get("/readyz/directory").await;
    assert_eq!((status, body.trim()), (200, "no directory is configured"));
    // Every answer carries the request id its log lines carry: the
    // caller's when it is a sane token, else a new one.
    let r = http
        .get(format!("{}/readyz", s.url))
        .header("x-request-id", "trace-42.a_b")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "trace-42.a_b");
    let r = http
        .get(format!("{}/readyz", s.url))
        .header("x-request-id", "bad id\twith tab")
        .send()
        .await
        .unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(id.len(), 32, "{id}");
    let e = ids
        .get_identity(pb::GetIdentityRequest {
            employee_id: "E1".into(),
        })
        .await
        .unwrap_err();
    assert!(
        e.metadata().get("x-request-id").is_some(),
        "gRPC answers carry it too"
    );
    s.stop().await;
}

/// A roster entry whose every text is long and multi-byte (`c` repeated).
fn long_entry(i: usize, c: char) -> pb::SyncRosterRequest {
    let text = |n: usize| std::iter::repeat_n(c, n).collect::<String>();
    pb::SyncRosterRequest {
        item: Some(pb::sync_roster_request::Item::Entry(pb::RosterEntry {
            employee_id: format!("L{i:04}"),
            attributes: Some(pb::PersonAttributes {
                display_name: Some(text(200)),
                department: Some(text(200)),
                title: Some(text(200)),
                location: Some(text(200)),
                job_code: Some(text(64)),
                cost_center: Some(text(64)),
                ..Default::default()
            }),
        })),
    }
}

/// The header of roster snapshot `sync_id` from "workday".
fn roster_header(sync_id: &str) -> pb::SyncRosterRequest {
    pb::SyncRosterRequest {
        item: Some(pb::sync_roster_request::Item::Header(pb::RosterHeader {
            source: "workday".into(),
            sync_id: sync_id.into(),
            ..Default::default()
        })),
    }
}

/// A roster of the first `n` of the people `L0000..`, texts of `c`.
fn long_roster(sync_id: &str, n: usize, c: char) -> Vec<pb::SyncRosterRequest> {
    std::iter::once(roster_header(sync_id))
        .chain((0..n).map(|i| long_entry(i, c)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_roster_refused_as_it_streams_leaves_nothing_staged() {
    let Some(s) = start("sqlite").await else {
        return;
    };
    with_policy(s.app()).await;
    let mut hr = s.hr(&[Role::HrFeed]).await;
    // 1,500 entries (one staged step and part of the next), then a second
    // header where an entry should be.
    let mut roster = long_roster("stray-header", 1500, 'x');
    roster.push(roster_header("stray-header"));
    let e = hr
        .sync_roster(tokio_stream::iter(roster))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains("one header, then only entries"),
        "{e:?}"
    );
    assert_eq!(
        roster_stages(s.app()).await.len(),
        0,
        "the refused roster's stage was kept"
    );
    // An entry that cannot be read (an unknown classification) is named by
    // its place, after entries staged in full steps; nothing is applied.
    let mut roster = long_roster("bad-entry", 2100, 'x');
    if let Some(pb::sync_roster_request::Item::Entry(e)) = &mut roster[2051].item
        && let Some(a) = &mut e.attributes
    {
        a.clearance = 99;
    }
    let e = hr
        .sync_roster(tokio_stream::iter(roster))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert_eq!(violated_fields(&e), ["roster[2050].clearance"], "{e:?}");
    assert_eq!(
        roster_stages(s.app()).await.len(),
        0,
        "the refused roster's stage was kept"
    );
    assert!(
        s.app().store.get_identity("L0000").await.unwrap().is_none(),
        "part of a refused roster was applied"
    );
    // The same roster whole is taken (held by the guard: the owners it does
    // not list would leave), and its stage goes too.
    let out = hr
        .sync_roster(tokio_stream::iter(long_roster("whole", 2100, 'x')))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(out.diff.map(|d| d.joiners), Some(2100));
    assert_eq!(
        roster_stages(s.app()).await.len(),
        0,
        "the applied roster's stage was kept"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_roster_whose_sender_goes_away_mid_stream_leaves_nothing_staged() {
    let Some(s) = start("sqlite").await else {
        return;
    };
    with_policy(s.app()).await;
    // The sender streams 1,500 entries (a step is staged) and then stops
    // sending without closing the stream; the call is then dropped, as a
    // feed killed mid-upload drops it.
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let call = {
        let mut hr = s.hr(&[Role::HrFeed]).await;
        tokio::spawn(async move {
            hr.sync_roster(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
        })
    };
    for m in long_roster("cut", 1500, 'x') {
        tx.send(m).await.unwrap();
    }
    let t0 = std::time::Instant::now();
    loop {
        let runs = roster_stages(s.app()).await;
        if let [run] = runs.as_slice()
            && !s
                .app()
                .store
                .staged_roster_at(run, &[999])
                .await
                .unwrap()
                .is_empty()
        {
            break;
        }
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(60),
            "nothing was staged: {runs:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    call.abort();
    let _ = call.await;
    drop(tx);
    let t0 = std::time::Instant::now();
    while !roster_stages(s.app()).await.is_empty() {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(30),
            "the stage of a roster whose sender went away was kept"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_diffs_stay_under_the_message_limit_and_a_held_roster_is_read_a_page_at_a_time() {
    let Some(s) = start("sqlite").await else {
        return;
    };
    with_policy(s.app()).await;
    let mut hr = s.hr(&[Role::HrFeed]).await;
    let mut sec = s.hr(&[Role::SecurityOfficer]).await;
    // 1,200 joiners whose six texts are 200 (or 64) three-byte characters:
    // a thousand such changes shown whole would pass the 4 MiB limit. The
    // two owners are not listed, so the guard holds it (2 of 2 leave).
    let first = hr
        .sync_roster(tokio_stream::iter(long_roster("long-1", 1200, '漢')))
        .await
        .expect("the answer fits the message limit")
        .into_inner();
    assert_eq!(first.outcome(), pb::ChangeOutcome::Held);
    let d = first.diff.expect("a diff");
    assert_eq!((d.joiners, d.leavers, d.total_changes), (1200, 2, 1202));
    assert!(
        d.changes_truncated && d.changes.len() == 1000,
        "{}",
        d.changes.len()
    );
    sec.release_held_change(pb::ReleaseHeldChangeRequest {
        id: first.held_change_id,
        reason: "the owners left".into(),
    })
    .await
    .expect("released");
    // Two snapshots that each list only the first 1,100, renamed: 100
    // leavers (past the guard's 5%) and 1,100 long updates each, held; the
    // thousand changes they show would be ~5 MiB whole.
    let mut held = Vec::new();
    for (sync_id, c) in [("long-2", 'β'), ("long-3", 'γ')] {
        let r = hr
            .sync_roster(tokio_stream::iter(long_roster(sync_id, 1100, c)))
            .await
            .expect("the held answer fits the message limit")
            .into_inner();
        assert_eq!(r.outcome(), pb::ChangeOutcome::Held);
        let d = r.diff.clone().expect("a diff");
        assert_eq!((d.leavers, d.total_changes), (100, 1200));
        assert!(
            d.changes_truncated && d.changes.len() > 100 && d.changes.len() < 1000,
            "{}",
            d.changes.len()
        );
        held.push(r.held_change_id);
    }
    // Held changes with long diffs: a page holds fewer than asked for, and
    // the token goes on to the rest.
    let mut listed = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = sec
            .list_held_changes(pb::ListHeldChangesRequest {
                page_size: 10,
                page_token: token,
                ..Default::default()
            })
            .await
            .expect("each page fits the message limit")
            .into_inner();
        pages += 1;
        listed.extend(page.held_changes.iter().map(|h| h.id.clone()));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(listed, held, "every held change once, in order");
    assert_eq!(pages, 2, "two diffs of ~2 MiB do not share a page");
    // Every change of a held roster, page by page, leavers first.
    let mut changes = Vec::new();
    let mut token = String::new();
    let mut sizes = Vec::new();
    loop {
        let page = sec
            .list_held_roster_changes(pb::ListHeldRosterChangesRequest {
                id: held[0].clone(),
                page_size: 1000,
                page_token: token,
            })
            .await
            .expect("each page fits the message limit")
            .into_inner();
        assert_eq!(page.total_changes, 1200);
        assert!(!page.changes.is_empty());
        sizes.push(page.changes.len());
        changes.extend(page.changes);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(changes.len(), 1200);
    let ids: std::collections::HashSet<&str> =
        changes.iter().map(|c| c.employee_id.as_str()).collect();
    assert_eq!(ids.len(), 1200, "no change listed twice");
    assert!(
        sizes[0] < 1000,
        "1,000 long updates do not fit a page of 3 MiB: {sizes:?}"
    );
    assert!(
        changes[..100]
            .iter()
            .all(|c| c.kind() == pb::RosterChangeKind::Leaver)
    );
    assert!(
        changes[100..]
            .iter()
            .all(|c| c.kind() != pb::RosterChangeKind::Leaver)
    );
    assert!(
        changes[100..]
            .iter()
            .all(|c| c.changes.iter().any(|f| f.new_value.starts_with('β')))
    );
    // Small pages, from any page's token.
    let small = sec
        .list_held_roster_changes(pb::ListHeldRosterChangesRequest {
            id: held[1].clone(),
            page_size: 7,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(small.changes.len(), 7);
    let next = sec
        .list_held_roster_changes(pb::ListHeldRosterChangesRequest {
            id: held[1].clone(),
            page_size: 7,
            page_token: small.next_page_token,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        next.changes[0].employee_id, "L1107",
        "the second page goes on after the seventh leaver"
    );
    // Unknown ids, forged tokens and decided changes are told apart.
    let e = sec
        .list_held_roster_changes(pb::ListHeldRosterChangesRequest {
            id: "nope".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = sec
        .list_held_roster_changes(pb::ListHeldRosterChangesRequest {
            id: held[1].clone(),
            page_token: "garbage".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    sec.discard_held_change(pb::DiscardHeldChangeRequest {
        id: held[1].clone(),
        reason: "stale".into(),
    })
    .await
    .unwrap();
    let e = sec
        .list_held_roster_changes(pb::ListHeldRosterChangesRequest {
            id: held[1].clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    s.stop().await;
}

/// Every change of preview `id`, read by `hr` in pages of `size`.
async fn whole_preview(
    hr: &mut HrServiceClient<Authed>,
    id: &str,
    size: i32,
) -> (Vec<pb::RosterChange>, Vec<usize>) {
    let (mut changes, mut sizes, mut token) = (Vec::new(), Vec::new(), String::new());
    loop {
        let page = hr
            .list_roster_preview(pb::ListRosterPreviewRequest {
                preview_id: id.into(),
                page_size: size,
                page_token: token,
            })
            .await
            .expect("each page fits the message limit")
            .into_inner();
        assert!(!page.changes.is_empty());
        sizes.push(page.changes.len());
        changes.extend(page.changes);
        if page.next_page_token.is_empty() {
            assert_eq!(changes.len() as i64, page.total_changes);
            return (changes, sizes);
        }
        token = page.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_too_large_to_show_is_listed_whole_by_its_preview() {
    let Some(s) = start("sqlite").await else {
        return;
    };
    with_policy(s.app()).await;
    let mut hr = s.hr(&[Role::HrFeed]).await;
    let mut sec = s.hr(&[Role::SecurityOfficer]).await;
    let mut auditor = s.hr(&[Role::Auditor]).await;
    let mut nobody = s.hr(&[]).await;
    // 900 people with long texts (held: the two owners leave; released).
    let base = hr
        .sync_roster(tokio_stream::iter(long_roster("base", 900, 'α')))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(base.outcome(), pb::ChangeOutcome::Held);
    sec.release_held_change(pb::ReleaseHeldChangeRequest {
        id: base.held_change_id,
        reason: "the owners left".into(),
    })
    .await
    .expect("released");
    // Every text rewritten (the department too: 900 movers), fewer than the 1,000 an answer
    // may show, but ~5 MiB of old and new values, so it shows only some.
    let r = hr
        .sync_roster(tokio_stream::iter(dry(long_roster("dry-1", 900, '漢'))))
        .await
        .expect("the answer fits the message limit")
        .into_inner();
    assert_eq!(r.outcome(), pb::ChangeOutcome::DryRun);
    let d = r.diff.clone().expect("a diff");
    assert_eq!((d.movers, d.total_changes), (900, 900));
    assert!(
        d.changes_truncated && d.changes.len() < 900,
        "{}",
        d.changes.len()
    );
    assert!(!r.preview_id.is_empty(), "a cut answer names its preview");
    // The feed that sent it, and a reader, list every change once, in
    // pages that stay under the message limit.
    for client in [&mut hr, &mut auditor] {
        let (changes, sizes) = whole_preview(client, &r.preview_id, 1000).await;
        assert_eq!(changes.len(), 900);
        assert!(
            sizes.len() > 1,
            "900 long moves do not fit a 3 MiB page: {sizes:?}"
        );
        let ids: std::collections::HashSet<&str> =
            changes.iter().map(|c| c.employee_id.as_str()).collect();
        assert_eq!(ids.len(), 900, "no change listed twice");
        assert!(
            changes
                .iter()
                .all(|c| c.kind() == pb::RosterChangeKind::Mover
                    && c.changes.iter().any(|f| f.new_value.starts_with('漢')))
        );
        // The answer showed the first of the same list.
        let shown: Vec<&str> = d.changes.iter().map(|c| c.employee_id.as_str()).collect();
        let listed: Vec<&str> = changes[..shown.len()]
            .iter()
            .map(|c| c.employee_id.as_str())
            .collect();
        assert_eq!(shown, listed);
    }
    let (small, _) = whole_preview(&mut hr, &r.preview_id, 7).await;
    assert_eq!(small.len(), 900);
    // Nothing of the dry run was applied.
    let mut ids = s.ids(&[Role::Auditor], None).await;
    let person = ids
        .get_identity(pb::GetIdentityRequest {
            employee_id: "L0000".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        person.display_name.starts_with('α'),
        "{}",
        person.display_name
    );
    // 1,200 short entries: 900 movers and 300 joiners, past the 1,000 shown.
    let short: Vec<pb::SyncRosterRequest> = dry(long_roster("dry-2", 1200, 'x'))
        .into_iter()
        .map(|mut m| {
            if let Some(pb::sync_roster_request::Item::Entry(e)) = &mut m.item {
                e.attributes = Some(pb::PersonAttributes {
                    display_name: Some(format!("Joiner {}", e.employee_id)),
                    department: Some("Finance".into()),
                    ..Default::default()
                });
            }
            m
        })
        .collect();
    let r2 = hr
        .sync_roster(tokio_stream::iter(short))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r2.diff.as_ref().unwrap().changes.len(), 1000);
    assert_ne!(
        r2.preview_id, r.preview_id,
        "each dry run has its own preview"
    );
    let (all, sizes) = whole_preview(&mut auditor, &r2.preview_id, 1000).await;
    assert_eq!((all.len(), sizes), (1200, vec![1000, 200]));
    // A dry run shown whole keeps nothing.
    let r3 = hr
        .sync_roster(tokio_stream::iter(dry(long_roster("dry-4", 900, 'α'))))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r3.diff.as_ref().unwrap().total_changes, 0);
    assert!(r3.preview_id.is_empty());
    // Someone without a reader's role is refused; unknown ids and forged
    // tokens are told apart.
    let e = nobody
        .list_roster_preview(pb::ListRosterPreviewRequest {
            preview_id: r.preview_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    for bad in ["nope", "", "' OR 1=1 --", &"9".repeat(5000)] {
        let e = hr
            .list_roster_preview(pb::ListRosterPreviewRequest {
                preview_id: bad.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{bad:.20}: {e:?}");
        assert!(e.message().contains("24 hours"), "{}", e.message());
    }
    let e = hr
        .list_roster_preview(pb::ListRosterPreviewRequest {
            preview_id: r.preview_id.clone(),
            page_token: "garbage".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    // A held sync's id is not a preview's.
    let held = hr
        .sync_roster(tokio_stream::iter(long_roster("dry-3", 100, 'α')))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(held.outcome(), pb::ChangeOutcome::Held);
    assert!(held.preview_id.is_empty());
    let e = hr
        .list_roster_preview(pb::ListRosterPreviewRequest {
            preview_id: held.held_change_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    s.stop().await;
}

/// `roster` with its header marked a dry run.
fn dry(mut roster: Vec<pb::SyncRosterRequest>) -> Vec<pb::SyncRosterRequest> {
    if let Some(pb::sync_roster_request::Item::Header(h)) = &mut roster[0].item {
        h.dry_run = true;
    }
    roster
}

/// The fields an InvalidArgument answer names, in its order.
fn violated_fields(e: &Status) -> Vec<String> {
    e.get_error_details()
        .bad_request()
        .expect("the answer names the fields at fault")
        .field_violations
        .iter()
        .map(|v| v.field.clone())
        .collect()
}

/// A roster snapshot `sync_id` from "workday" listing `people` (in the
/// order given), each named `name` followed by their id.
fn named_roster(sync_id: &str, people: &[String], name: &str) -> Vec<pb::SyncRosterRequest> {
    std::iter::once(roster_header(sync_id))
        .chain(people.iter().map(|id| pb::SyncRosterRequest {
            item: Some(pb::sync_roster_request::Item::Entry(pb::RosterEntry {
                employee_id: id.clone(),
                attributes: Some(pb::PersonAttributes {
                    display_name: Some(format!("{name} {id}")),
                    department: Some("Finance".into()),
                    ..Default::default()
                }),
            })),
        }))
        .collect()
}

/// Every page of the events of roster sync `sync_id`, `size` at a time.
async fn events_of_sync(
    hr: &mut HrServiceClient<Authed>,
    sync_id: &str,
    size: i32,
) -> Vec<pb::RecordedHrEvent> {
    let (mut all, mut token) = (Vec::new(), String::new());
    loop {
        let page = hr
            .list_hr_events(pb::ListHrEventsRequest {
                page_size: size,
                page_token: token,
                roster_source: "workday".into(),
                roster_sync_id: sync_id.into(),
                ..Default::default()
            })
            .await
            .expect("a page")
            .into_inner();
        assert!(page.events.len() <= size as usize);
        all.extend(page.events);
        if page.next_page_token.is_empty() {
            return all;
        }
        token = page.next_page_token;
    }
}

async fn the_events_of_one_roster_sync_are_listed_by_employee_id(backend: &'static str) {
    let Some(s) = start(backend).await else {
        return;
    };
    with_policy(s.app()).await;
    let mut hr = s.hr(&[Role::HrFeed]).await;
    let mut auditor = s.hr(&[Role::Auditor]).await;
    // 211 joiners sent in a shuffled order, with the two people already
    // known (moved to Finance: two movers).
    let mut people: Vec<String> = (0..211)
        .map(|i| format!("P{:04}", (i * 97) % 211))
        .collect();
    people.extend(["O1".to_string(), "O2".to_string()]);
    let first = hr
        .sync_roster(tokio_stream::iter(named_roster("s", &people, "Joined")))
        .await
        .expect("the roster applies")
        .into_inner();
    assert_eq!(first.outcome(), pb::ChangeOutcome::Applied);
    // A later sync whose id starts like the first's ("s:2"), renaming
    // nine people: its events' ids begin `roster:s:2:`, which also begins
    // `roster:s:`.
    let renamed: Vec<String> = people
        .iter()
        .filter(|p| p.ends_with('3'))
        .cloned()
        .collect();
    let second = hr
        .sync_roster(tokio_stream::iter(
            named_roster("s:2", &people, "Joined")
                .into_iter()
                .map(|mut m| {
                    if let Some(pb::sync_roster_request::Item::Entry(e)) = &mut m.item
                        && renamed.contains(&e.employee_id)
                    {
                        e.attributes.as_mut().unwrap().display_name =
                            Some(format!("Renamed {}", e.employee_id));
                    }
                    m
                })
                .collect::<Vec<_>>(),
        ))
        .await
        .expect("the second roster applies")
        .into_inner();
    assert_eq!(second.outcome(), pb::ChangeOutcome::Applied);
    assert_eq!(second.diff.unwrap().updates as usize, renamed.len());
    // An HR event sent on its own, which no roster made.
    let q1 = |event_id: &str, kind: pb::HrEventType, attributes: pb::PersonAttributes| {
        pb::SubmitHrEventRequest {
            event: Some(pb::HrEvent {
                source: "workday".into(),
                event_id: event_id.into(),
                r#type: kind as i32,
                employee_id: "Q1".into(),
                attributes: Some(attributes),
                ..Default::default()
            }),
        }
    };
    let named = pb::PersonAttributes {
        display_name: Some("Q".into()),
        ..Default::default()
    };
    hr.submit_hr_event(q1("hire-Q1", pb::HrEventType::Hire, named))
        .await
        .expect("a hire");
    // An event that takes the name of one of the snapshot's own is refused
    // (in any letter case), so it cannot be listed among them.
    for id in ["roster:s:Q1", "ROSTER:s:Q1"] {
        let planted = pb::PersonAttributes {
            title: Some("Planted".into()),
            ..Default::default()
        };
        let e = hr
            .submit_hr_event(q1(id, pb::HrEventType::Update, planted))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{id}");
        assert_eq!(violated_fields(&e), ["event.event_id"], "{id}");
    }

    let mut everyone = people.clone();
    everyone.sort();
    for size in [1, 7, 100, 1000] {
        let listed = events_of_sync(&mut auditor, "s", size).await;
        let ids: Vec<String> = listed
            .iter()
            .map(|e| e.event.clone().unwrap().employee_id)
            .collect();
        assert_eq!(ids, everyone, "page size {size}");
        for e in &listed {
            let ev = e.event.clone().unwrap();
            assert_eq!(ev.event_id, format!("roster:s:{}", ev.employee_id));
            let kind = if ev.employee_id.starts_with('O') {
                pb::HrEventType::Move
            } else {
                pb::HrEventType::Hire
            };
            assert_eq!(ev.r#type(), kind);
        }
    }
    let second_ids: Vec<String> = events_of_sync(&mut auditor, "s:2", 4)
        .await
        .iter()
        .map(|e| e.event.clone().unwrap().employee_id)
        .collect();
    let mut expected = renamed.clone();
    expected.sort();
    assert_eq!(second_ids, expected);
    assert!(events_of_sync(&mut auditor, "s:", 10).await.is_empty());
    assert!(events_of_sync(&mut auditor, "nothing", 10).await.is_empty());
    // Narrowed by person and by state.
    let one = auditor
        .list_hr_events(pb::ListHrEventsRequest {
            roster_source: "workday".into(),
            roster_sync_id: "s".into(),
            employee_id: "P0042".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(one.events.len(), 1);
    let none = auditor
        .list_hr_events(pb::ListHrEventsRequest {
            roster_source: "workday".into(),
            roster_sync_id: "s".into(),
            state: pb::HrEventState::Rejected as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(none.events.is_empty());
    // Half a name is refused, saying which half is missing; so is a name
    // longer than a roster's header may give.
    let long = "s".repeat(129);
    for (source, sync_id, missing) in [
        ("workday", "", "roster_sync_id"),
        ("", "s", "roster_source"),
        ("workday", long.as_str(), "roster_sync_id"),
    ] {
        let e = auditor
            .list_hr_events(pb::ListHrEventsRequest {
                roster_source: source.into(),
                roster_sync_id: sync_id.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert_eq!(violated_fields(&e), [missing]);
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_of_one_roster_sync_are_listed_by_employee_id_sqlite() {
    the_events_of_one_roster_sync_are_listed_by_employee_id("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_of_one_roster_sync_are_listed_by_employee_id_postgres() {
    the_events_of_one_roster_sync_are_listed_by_employee_id("postgres").await;
}
