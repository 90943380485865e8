//! Nothing attacker-sized is echoed (issue 7): oversized fields are refused
//! with a field violation that says what the limit is, responses stay small,
//! and a message that is not valid protobuf or UTF-8 is INVALID_ARGUMENT.

use crate::common::*;
use idgov_authz::Role;
use idgov_proto::v1 as pb;
use idgov_proto::v1::hr_service_client::HrServiceClient;
use idgov_tests::server::start;
use prost::Message;
use tonic::Code;
use tonic_types::StatusExt;

const MIB: usize = 1 << 20;

/// The size of everything a status carries back to the caller.
fn status_size(s: &tonic::Status) -> usize {
    s.message().len() + s.details().len()
}

async fn submit_big(field: &str) -> tonic::Status {
    let s = start("sqlite").await.expect("server");
    with_policy(s.app()).await;
    let ch = s.channel(Some(s.token(&[Role::HrFeed], None))).await;
    let mut hr = HrServiceClient::new(ch);
    let big = "x".repeat(MIB);
    let mut ev = pb::HrEvent {
        source: "workday".into(),
        event_id: "big-1".into(),
        r#type: pb::HrEventType::Hire as i32,
        employee_id: "E1".into(),
        attributes: Some(pb::PersonAttributes {
            display_name: Some("Ada".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let attrs = ev.attributes.as_mut().expect("attrs");
    match field {
        "email" => attrs.email = Some(format!("{big}@example.com")),
        "display_name" => attrs.display_name = Some(big.clone()),
        "time_zone" => ev.time_zone = big.clone(),
        "effective_at" => ev.effective_at = big.clone(),
        "source" => ev.source = big.clone(),
        "event_id" => ev.event_id = big.clone(),
        "employee_id" => ev.employee_id = big.clone(),
        "end_date" => attrs.end_date = Some(big.clone()),
        "background_check_date" => attrs.background_check_date = Some(big.clone()),
        "manager_employee_id" => attrs.manager_employee_id = Some(big.clone()),
        other => panic!("no field {other}"),
    }
    hr.submit_hr_event(pb::SubmitHrEventRequest { event: Some(ev) })
        .await
        .expect_err("a megabyte field is refused")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_megabyte_in_any_field_is_refused_without_being_echoed() {
    for field in [
        "email",
        "display_name",
        "time_zone",
        "effective_at",
        "source",
        "event_id",
        "employee_id",
        "end_date",
        "background_check_date",
        "manager_employee_id",
    ] {
        let st = submit_big(field).await;
        assert_eq!(st.code(), Code::InvalidArgument, "{field}: {st:?}");
        assert!(
            status_size(&st) < 4096,
            "{field}: the error carries {} bytes",
            status_size(&st)
        );
        let v = st
            .get_error_details()
            .bad_request()
            .map(|b| b.field_violations.clone())
            .unwrap_or_default();
        assert!(
            v.iter().any(|v| v.field.ends_with(field)),
            "{field}: violations {v:?}"
        );
    }
}

/// Sends raw bytes as a SubmitHrEvent request.
async fn submit_raw(ch: idgov_tests::server::Authed, body: Vec<u8>) -> tonic::Status {
    #[derive(Clone, Default)]
    struct Raw;
    struct RawEnc;
    impl tonic::codec::Encoder for RawEnc {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn encode(
            &mut self,
            item: Vec<u8>,
            buf: &mut tonic::codec::EncodeBuf<'_>,
        ) -> Result<(), tonic::Status> {
            prost::bytes::BufMut::put_slice(buf, &item);
            Ok(())
        }
    }
    impl tonic::codec::Codec for Raw {
        type Encode = Vec<u8>;
        type Decode = pb::SubmitHrEventResponse;
        type Encoder = RawEnc;
        type Decoder = tonic_prost::ProstDecoder<pb::SubmitHrEventResponse>;
        fn encoder(&mut self) -> RawEnc {
            RawEnc
        }
        fn decoder(&mut self) -> Self::Decoder {
            tonic_prost::ProstDecoder::default()
        }
    }
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready().await.expect("ready");
    let path =
        tonic::codegen::http::uri::PathAndQuery::from_static("/idgov.v1.HrService/SubmitHrEvent");
    grpc.unary(tonic::Request::new(body), path, Raw)
        .await
        .expect_err("refused")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_and_malformed_messages_are_invalid_argument() {
    let s = start("sqlite").await.expect("server");
    with_policy(s.app()).await;
    let token = s.token(&[Role::HrFeed], None);
    // A valid request whose source (field 1 of HrEvent) is replaced by
    // bytes that are not UTF-8.
    let ev = pb::HrEvent {
        source: "ab".into(),
        event_id: "utf-1".into(),
        r#type: pb::HrEventType::Hire as i32,
        employee_id: "E1".into(),
        ..Default::default()
    };
    let mut inner = ev.encode_to_vec();
    let at = inner
        .windows(2)
        .position(|w| w == b"ab")
        .expect("source bytes");
    inner[at] = 0xff;
    inner[at + 1] = 0xfe;
    let mut body = vec![0x0a];
    prost::encoding::encode_varint(inner.len() as u64, &mut body);
    body.extend(inner);
    let st = submit_raw(s.channel(Some(token.clone())).await, body).await;
    assert_eq!(st.code(), Code::InvalidArgument, "{st:?}");
    assert!(st.message().contains("UTF-8"), "{st:?}");
    // Not protobuf at all.
    let st = submit_raw(s.channel(Some(token)).await, vec![0xff; 64]).await;
    assert_eq!(st.code(), Code::InvalidArgument, "{st:?}");
    assert!(
        s.app().store.get_identity("E1").await.unwrap().is_none(),
        "nothing applied"
    );
}

/// Every RPC that takes text, called with a megabyte in each text field by a
/// caller allowed to call it: a clear refusal or an empty answer, never an
/// internal error, and never a response that echoes the input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_rpc_echoes_an_attacker_sized_value() {
    use idgov_proto::v1::audit_service_client::AuditServiceClient;
    use idgov_proto::v1::directory_service_client::DirectoryServiceClient;
    use idgov_proto::v1::identity_service_client::IdentityServiceClient;
    use idgov_proto::v1::policy_service_client::PolicyServiceClient;
    use idgov_proto::v1::provisioning_service_client::ProvisioningServiceClient;
    let s = start("sqlite").await.expect("server");
    with_policy(s.app()).await;
    let all = [
        Role::HrFeed,
        Role::ItAdmin,
        Role::SecurityOfficer,
        Role::Auditor,
    ];
    let ch = s.channel(Some(s.token(&all, None))).await;
    let big = "x".repeat(MIB);
    let mut hr = HrServiceClient::new(ch.clone());
    let mut ids = IdentityServiceClient::new(ch.clone());
    let mut pol = PolicyServiceClient::new(ch.clone());
    let mut audit = AuditServiceClient::new(ch.clone());
    let mut prov = ProvisioningServiceClient::new(ch.clone());
    let mut dir = DirectoryServiceClient::new(ch);
    let b = || big.clone();
    let results: Vec<(&str, Result<(), tonic::Status>)> = vec![
        (
            "GetIdentity",
            ids.get_identity(pb::GetIdentityRequest { employee_id: b() })
                .await
                .map(|_| ()),
        ),
        (
            "ListIdentities",
            ids.list_identities(pb::ListIdentitiesRequest {
                department: b(),
                manager_employee_id: b(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
        ),
        (
            "ListIdentities page",
            ids.list_identities(pb::ListIdentitiesRequest {
                page_token: b(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
        ),
        (
            "ListGrants",
            ids.list_grants(pb::ListGrantsRequest {
                employee_id: b(),
                page_token: b(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
        ),
        (
            "ListHrEvents",
            hr.list_hr_events(pb::ListHrEventsRequest {
                employee_id: b(),
                page_token: b(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
        ),
        (
            "ListHrEvents of a roster sync",
            hr.list_hr_events(pb::ListHrEventsRequest {
                employee_id: b(),
                roster_source: b(),
                roster_sync_id: b(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
        ),
        (
            "ReleaseHeldChange",
            hr.release_held_change(pb::ReleaseHeldChangeRequest {
                id: b(),
                reason: b(),
            })
            .await
            .map(|_| ()),
        ),
        (
            "DiscardHeldChange",
            hr.discard_held_change(pb::DiscardHeldChangeRequest {
                id: b(),
                reason: b(),
            })
            .await
            .map(|_| ()),
        ),
        (
            "ApplyPolicy",
            pol.apply_policy(pb::ApplyPolicyRequest {
                document: b(),
                reason: b(),
                dry_run: true,
            })
            .await
            .map(|_| ()),
        ),
        (
            "ListEntitlements",
            pol.list_entitlements(pb::ListEntitlementsRequest {
                system_id: b(),
                page_token: b(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
        ),
        (
            "ListAuditEvents",
            audit
                .list_audit_events(pb::ListAuditEventsRequest {
                    actor: b(),
                    target: b(),
                    action: b(),
                    page_token: b(),
                    ..Default::default()
                })
                .await
                .map(|_| ()),
        ),
        (
            "ListDirectoryOperations",
            prov.list_directory_operations(pb::ListDirectoryOperationsRequest {
                employee_id: b(),
                page_token: b(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
        ),
        (
            "GetDirectorySync",
            dir.get_directory_sync(pb::GetDirectorySyncRequest { id: b() })
                .await
                .map(|_| ()),
        ),
        (
            "ListDrift",
            dir.list_drift(pb::ListDriftRequest {
                sync_id: b(),
                page_token: b(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
        ),
    ];
    for (rpc, r) in results {
        if let Err(st) = r {
            assert!(
                !matches!(
                    st.code(),
                    Code::Internal | Code::Unknown | Code::ResourceExhausted
                ),
                "{rpc}: {st:?}"
            );
            assert!(
                status_size(&st) < 8192,
                "{rpc}: the error carries {} bytes",
                status_size(&st)
            );
        }
    }
}
