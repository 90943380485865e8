//! The tower layer every call passes through: authenticate, refuse departed
//! people, and decide the RPC-level authorization with `idgov-authz`. The
//! decision travels to the handler as an [`idgov_authz::Access`] extension.
//! Only gRPC health and reflection are open without credentials; paths
//! outside `/idgov.*` belong to the web app, which has its own sessions.

use super::denials::DenialLog;
use super::{Authenticator, CertRoles};
use crate::error::AppError;
use crate::grpc::status::refused_at_the_door;
use idgov_authz::{Rpc, check_rpc};
use idgov_domain::identity::Status;
use idgov_store::Store;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::body::Body;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};

/// Paths open without credentials.
const OPEN_PREFIXES: [&str; 3] = [
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// The prefix of every idgov gRPC method path; every call under it is
/// authenticated and authorized here.
pub const GRPC_PREFIX: &str = "/idgov.";

#[derive(Debug)]
struct Shared {
    auth: Authenticator,
    certs: CertRoles,
    store: Store,
    denials: Arc<DenialLog>,
}

/// Adds authentication and authorization to a gRPC service.
#[derive(Debug, Clone)]
pub struct AuthLayer(Arc<Shared>);

impl AuthLayer {
    pub fn new(
        auth: Authenticator,
        certs: CertRoles,
        store: Store,
        denials: Arc<DenialLog>,
    ) -> Self {
        AuthLayer(Arc::new(Shared {
            auth,
            certs,
            store,
            denials,
        }))
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService {
            inner,
            shared: self.0.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl Shared {
    async fn decide(
        &self,
        path: &str,
        headers: &http::HeaderMap,
        peer_cert: Option<Vec<u8>>,
    ) -> Result<idgov_authz::Access, (AppError, String)> {
        let unknown = |e: AppError| (e, "unknown".to_string());
        // A verified client certificate speaks for a machine client; without
        // one, the bearer token does.
        let caller = match peer_cert {
            Some(der) if headers.get(http::header::AUTHORIZATION).is_none() => self
                .certs
                .caller(&der)
                .map_err(|e| unknown(AppError::Unauthenticated(e)))?,
            _ => self
                .auth
                .authenticate(headers, &self.store)
                .await
                .map_err(unknown)?,
        };
        super::nameable(&caller).map_err(|e| unknown(AppError::Unauthenticated(e)))?;
        let actor = caller.actor();
        let named = |e: AppError| (e, actor.clone());
        if let Some(emp) = &caller.employee_id
            && let Some(person) = self
                .store
                .get_identity(emp)
                .await
                .map_err(|e| named(e.into()))?
            && person.status == Status::Terminated
        {
            return Err(named(AppError::Unauthenticated(format!(
                "{emp} has left the organisation; their credentials are no longer accepted"
            ))));
        }
        let rpc = Rpc::from_path(path).ok_or_else(|| {
            named(AppError::PermissionDenied(format!(
                "{} is not an idgov method",
                idgov_domain::error::echo(path)
            )))
        })?;
        check_rpc(&caller, rpc).map_err(|d| named(AppError::PermissionDenied(d.reason)))
    }
}

impl<S> Service<http::Request<Body>> for AuthService<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        // Take the service that was driven to readiness; leave a clone.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        let request_id = request_id(req.headers());
        let span =
            tracing::info_span!("request", request_id = %request_id, path = %req.uri().path());
        let header = http::HeaderValue::from_str(&request_id).ok();
        let fut = Box::pin(async move {
            let path = req.uri().path().to_string();
            if OPEN_PREFIXES.iter().any(|p| path.starts_with(p)) {
                return inner.call(req).await;
            }
            // Everything outside idgov's gRPC services is the web app,
            // which signs people in with sessions of its own (idgov-web).
            if !path.starts_with(GRPC_PREFIX) {
                return inner.call(req).await;
            }
            let peer_cert = req
                .extensions()
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|i| i.peer_certs())
                .and_then(|c| c.first().map(|c| c.as_ref().to_vec()));
            match shared.decide(&path, req.headers(), peer_cert).await {
                Ok(access) => {
                    let caller = access.caller.actor();
                    req.extensions_mut().insert(access);
                    let resp = inner.call(req).await?;
                    // Object-level denials are decided in the handlers.
                    if resp.headers().get("grpc-status").is_some_and(|s| s == "7") {
                        let reason = resp
                            .headers()
                            .get("grpc-message")
                            .and_then(|m| m.to_str().ok())
                            .unwrap_or_default()
                            .to_string();
                        shared
                            .denials
                            .record("permission_denied", &caller, &path, &reason);
                    }
                    Ok(resp)
                }
                Err((e, caller)) => {
                    let kind = match &e {
                        AppError::Unauthenticated(_) => "unauthenticated",
                        _ => "permission_denied",
                    };
                    shared.denials.record(kind, &caller, &path, &e.to_string());
                    tracing::info!(path = %path, error = %e, "call refused");
                    Ok(refused_at_the_door(e).into_http())
                }
            }
        });
        Box::pin(tracing::Instrument::instrument(
            async move {
                let mut resp = fut.await?;
                if let Some(h) = header {
                    resp.headers_mut().insert("x-request-id", h);
                }
                Ok::<_, S::Error>(resp)
            },
            span,
        ))
    }
}

/// The caller's `x-request-id` when it is a sane token (up to 64 of
/// `[A-Za-z0-9._-]`), else a new one: every log line of the call carries it,
/// and the answer returns it.
fn request_id(headers: &http::HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        })
        .map(String::from)
        .unwrap_or_else(|| uuid::Uuid::now_v7().simple().to_string())
}
