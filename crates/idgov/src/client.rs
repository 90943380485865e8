//! Connecting to the server as a client: address, token, and errors that
//! say what to do.

use anyhow::{Context, anyhow};
use std::path::PathBuf;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

/// The file `idgov dev token` writes and every client command reads.
pub fn token_path() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("idgov").join("token")
}

/// The token to send: `--token`/`IDGOV_TOKEN`, else the saved one.
pub fn load_token(explicit: Option<&str>) -> Option<String> {
    if let Some(t) = explicit.filter(|t| !t.trim().is_empty()) {
        return Some(t.trim().to_string());
    }
    std::fs::read_to_string(token_path())
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Adds the bearer token to every call.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<tonic::metadata::Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

pub type Authed = InterceptedService<Channel, Bearer>;

/// A generated API client with the API's message-size limits set
/// explicitly on this side too: the server's limit
/// (`idgov_server::serve::MAX_MESSAGE_BYTES`, 4 MiB) for what it sends and
/// what it accepts. Lists are paged and rosters streamed an entry at a
/// time, so no message comes near it; a message that would is refused here
/// with the limit named instead of by the server.
macro_rules! limited {
    ($client:expr) => {
        $client
            .max_decoding_message_size(idgov_server::serve::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(idgov_server::serve::MAX_MESSAGE_BYTES)
    };
}
pub(crate) use limited;

/// The most items the server answers in one page of a list.
pub const SERVER_PAGE: i32 = 1000;

/// Up to `limit` items of a paged list, asking `page(size, token)` page
/// after page from `token`: the server answers at most [`SERVER_PAGE`] a
/// page, and `--limit 5000` still means 5,000 (it gave 1,000, silently in
/// JSON). `limit` 0 asks one page of the server's default size; a negative
/// one goes to the server, which refuses it. Returns the items and the
/// token of what follows ("" when nothing does).
pub async fn up_to<T, Fut>(
    limit: i32,
    mut token: String,
    mut page: impl FnMut(i32, String) -> Fut,
) -> anyhow::Result<(Vec<T>, String)>
where
    Fut: std::future::Future<Output = anyhow::Result<(Vec<T>, String)>>,
{
    let mut all: Vec<T> = Vec::new();
    loop {
        let size = if limit <= 0 {
            limit
        } else {
            (limit - i32::try_from(all.len()).unwrap_or(i32::MAX)).min(SERVER_PAGE)
        };
        let (items, next) = page(size, token).await?;
        let got = items.len();
        all.extend(items);
        token = next;
        let full = limit > 0 && all.len() >= usize::try_from(limit).unwrap_or(usize::MAX);
        if limit <= 0 || token.is_empty() || full || got == 0 {
            return Ok((all, token));
        }
    }
}

/// For `--output json`: says on stderr (stdout stays one JSON document)
/// that the list stopped at its limit with more to follow, and how to see
/// the rest.
pub fn more_follow_on_stderr(token: &str, how: &str) {
    if !token.is_empty() {
        eprintln!("(more follow: {how})");
    }
}

/// A connection to the server.
pub struct Client {
    pub channel: Authed,
}

impl Client {
    pub async fn connect(opts: &crate::ClientOpts) -> anyhow::Result<Client> {
        let server = opts.server.as_str();
        let token = opts.token.as_deref();
        let url = if server.contains("://") {
            server.to_string()
        } else {
            format!("http://{server}")
        };
        let mut endpoint = Endpoint::from_shared(url.clone())
            .with_context(|| {
                format!("{server:?} is not a server address; use e.g. http://127.0.0.1:50051")
            })?
            .connect_timeout(std::time::Duration::from_secs(5));
        if url.starts_with("https://") {
            let read = |p: &std::path::Path| {
                std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))
            };
            let mut tls = ClientTlsConfig::new();
            tls = match &opts.ca_file {
                Some(ca) => tls.ca_certificate(Certificate::from_pem(read(ca)?)),
                None => tls.with_webpki_roots(),
            };
            if let (Some(cert), Some(key)) = (&opts.client_cert, &opts.client_key) {
                tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            endpoint = endpoint.tls_config(tls).context("TLS configuration")?;
        }
        let channel = endpoint.connect().await.map_err(|_| {
            anyhow!(
                "cannot reach idgov at {url}; is the server running? Start it with `idgov serve`, \
                 or point --server / IDGOV_SERVER at it"
            )
        })?;
        let token = load_token(token)
            .map(|t| format!("Bearer {t}").parse::<MetadataValue<_>>())
            .transpose()
            .map_err(|_| {
                anyhow!("the token is not valid header text; mint a new one with `idgov dev token`")
            })?;
        Ok(Client {
            channel: InterceptedService::new(channel, Bearer(token)),
        })
    }
}

/// An error the server answered, explained for people (see [`explain`]),
/// with its stable code (`IDGOV_…`, the `ErrorInfo` reason) for a command
/// that handles one case itself.
#[derive(Debug)]
pub struct ServerError {
    /// The stable code, empty when the answer carried none.
    pub reason: String,
    message: String,
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ServerError {}

/// The stable code of the server's answer that `e` is, if it is one.
pub fn server_reason(e: &anyhow::Error) -> Option<&str> {
    e.downcast_ref::<ServerError>().map(|s| s.reason.as_str())
}

/// True when the authorization table refused the caller's roles (the
/// server's `ErrorInfo` says `denied_by: role`), not a rule about the
/// object or the caller.
fn denied_by_role(details: &tonic_types::ErrorDetails) -> bool {
    details
        .error_info()
        .and_then(|i| i.metadata.get("denied_by"))
        .is_some_and(|by| by == "role")
}

/// Turns a gRPC error into a message for people: what happened, which
/// fields were wrong, and what to do.
pub fn explain(s: Status) -> anyhow::Error {
    let mut msg = s.message().to_string();
    let details = s.get_error_details();
    if let Some(br) = details.bad_request()
        && !br.field_violations.is_empty()
    {
        msg = msg.split("; ").next().unwrap_or_default().to_string();
        for v in &br.field_violations {
            msg.push_str(&format!("\n  - {}: {}", v.field, v.description));
        }
    }
    let hint = match s.code() {
        Code::Unauthenticated => Some(
            "mint a token with `idgov dev token --role ROLE` (development mode), or set IDGOV_TOKEN",
        ),
        // Only the authorization table's refusal is about roles; a rule
        // (one's own request, someone outside one's reach) says itself
        // what refused, and another token would not change it.
        Code::PermissionDenied if denied_by_role(&details) => Some(
            "your token does not carry a role this needs; `idgov authz matrix` lists who may do what",
        ),
        Code::Unavailable
            if details.error_info().map(|i| i.reason.as_str()) == Some("IDGOV_GOES_ON_LATER") =>
        {
            Some(
                "do not send it again: it is recorded and finishes by itself once the server is back; \
                 follow it with `idgov audit list --action policy.recomputed` (or roster.sync, campaign.started, campaign.closed)",
            )
        }
        Code::Unavailable => {
            Some("the server or its database is unavailable; retry, or check the server log")
        }
        Code::Aborted => Some("a concurrent change got there first; run the command again"),
        _ => None,
    };
    if let Some(h) = hint {
        msg.push_str(&format!("\nhint: {h}"));
    }
    anyhow::Error::new(ServerError {
        reason: details
            .error_info()
            .map(|i| i.reason.clone())
            .unwrap_or_default(),
        message: msg,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::{ErrorDetails, StatusExt};

    fn unavailable(reason: &str) -> String {
        let mut d = ErrorDetails::new();
        d.set_error_info(reason, "idgov.dev", std::collections::HashMap::new());
        explain(Status::with_error_details(Code::Unavailable, "stopped", d)).to_string()
    }

    fn denied(by: Option<&str>) -> String {
        let mut d = ErrorDetails::new();
        let metadata = by
            .map(|b| std::collections::HashMap::from([("denied_by".to_string(), b.to_string())]))
            .unwrap_or_default();
        d.set_error_info("IDGOV_PERMISSION_DENIED", "idgov.dev", metadata);
        explain(Status::with_error_details(
            Code::PermissionDenied,
            "refused",
            d,
        ))
        .to_string()
    }

    /// "Get a role" is said only when a role is what is missing: a rule
    /// (approving one's own request) is not fixed by another token.
    #[test]
    fn only_a_refused_role_is_explained_as_a_missing_role() {
        assert!(denied(Some("role")).contains("does not carry a role"));
        for by in [Some("rule"), None] {
            let m = denied(by);
            assert!(!m.contains("role"), "{by:?}: {m}");
            assert!(m.starts_with("refused"), "{m}");
        }
    }

    /// A limit above the server's page is met page by page; a page cut
    /// short by the server (its own cap) does not end the list early.
    #[tokio::test]
    async fn a_limit_above_one_page_is_met_page_by_page() {
        // A server of 2,500 items that answers at most `cap` a page.
        let serve = |cap: i32| {
            move |size: i32, token: String| async move {
                let from: i32 = token.parse().unwrap_or(0);
                let size = if size == 0 { 100 } else { size.min(cap) };
                let to = (from + size).min(2500);
                let next = if to < 2500 {
                    to.to_string()
                } else {
                    String::new()
                };
                Ok::<_, anyhow::Error>(((from..to).collect::<Vec<i32>>(), next))
            }
        };
        for (limit, cap, want, more) in [
            (2000, 1000, 2000, true),
            (2000, 300, 2000, true),
            (5000, 1000, 2500, false),
            (2500, 1000, 2500, false),
            (0, 1000, 100, true),
            (7, 1000, 7, true),
        ] {
            let (items, next) = up_to(limit, String::new(), serve(cap)).await.unwrap();
            assert_eq!(items.len(), want, "limit {limit}, cap {cap}");
            assert_eq!(items, (0..want as i32).collect::<Vec<_>>());
            assert_eq!(!next.is_empty(), more, "limit {limit}, cap {cap}");
        }
        // From a token: where the last page stopped.
        let (items, _) = up_to(10, "2495".into(), serve(1000)).await.unwrap();
        assert_eq!(items, (2495..2500).collect::<Vec<_>>());
    }

    #[test]
    fn bulk_work_that_goes_on_by_itself_is_not_to_be_sent_again() {
        let goes_on = unavailable("IDGOV_GOES_ON_LATER");
        assert!(goes_on.contains("do not send it again"), "{goes_on}");
        assert!(!goes_on.contains("retry"), "{goes_on}");
        let down = unavailable("IDGOV_UNAVAILABLE");
        assert!(down.contains("retry"), "{down}");
    }
}
