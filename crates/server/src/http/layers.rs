//! The layers every request passes: bounds on bodies, concurrency and time ([`limit`]), the
//! Host and token checks ([`guard`]) and request metrics ([`track`]).

use super::*;

/// Bounds that keep an overloaded server answering: at most `in_flight` requests at once (the
/// rest get 503 with `Retry-After`), each finished within `timeout` (admin batches excepted).
#[derive(Debug)]
pub struct Limits {
    in_flight: Arc<tokio::sync::Semaphore>,
    max_in_flight: usize,
    timeout: Duration,
    header_timeout: Duration,
}

impl Limits {
    /// At most `max_in_flight` concurrent requests (at least 1), each within `timeout`; a
    /// connection's request head within [`DEFAULT_HEADER_TIMEOUT`].
    pub fn new(max_in_flight: usize, timeout: Duration) -> Self {
        let max_in_flight = max_in_flight.max(1);
        Self {
            in_flight: Arc::new(tokio::sync::Semaphore::new(max_in_flight)),
            max_in_flight,
            timeout,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
        }
    }

    /// The same limits with another time for a connection to send a request head, or to stay
    /// idle between requests (then it is closed).
    pub fn with_header_timeout(mut self, header_timeout: Duration) -> Self {
        self.header_timeout = header_timeout;
        self
    }

    /// The time a connection has to send a request head, or may stay idle between requests.
    pub fn header_timeout(&self) -> Duration {
        self.header_timeout
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_IN_FLIGHT, DEFAULT_REQUEST_TIMEOUT)
    }
}

/// Concurrent requests served at most by default.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 512;

/// Time a request may take by default (admin batches excepted).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The access class of a request, from its matched route and method.
pub(super) fn route_class(req: &Request) -> RouteClass {
    let path = req.extensions().get::<MatchedPath>().map(|p| p.as_str());
    match (req.method(), path) {
        (_, Some("/" | "/healthz" | "/readyz" | "/metrics" | "/openapi.json")) => RouteClass::Open,
        (&Method::POST, Some("/v1/events" | "/v1/impressions")) => RouteClass::Write,
        (&Method::POST, Some("/v1/items" | "/v1/items/delete"))
        | (&Method::DELETE, Some("/v1/items/{item}")) => RouteClass::Catalog,
        (_, Some(p)) if p.starts_with("/v1/admin/") => RouteClass::Admin,
        _ => RouteClass::Read,
    }
}

/// A request's place among the in-flight requests, shared with the blocking work it starts: the
/// place is given back when the request and its work have both finished, so work that outlives
/// its timed-out request still counts against `--max-in-flight`.
#[derive(Clone)]
pub(super) struct InFlight(#[allow(dead_code)] Arc<tokio::sync::OwnedSemaphorePermit>);

/// Runs `work` on the blocking thread pool, holding the request's in-flight place until it ends:
/// CPU-heavy work (filtered and exact searches, profile reads) never occupies an async worker,
/// so other requests keep being answered, and the request's timeout still applies to it.
pub(super) async fn blocking<T: Send + 'static>(
    place: Option<Extension<InFlight>>,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(move || {
        let _held = place;
        work()
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))
}

/// Reads the request's body (refused at once when its declared length is over the limit, 408
/// when it does not arrive within the request timeout), then bounds concurrency (503 with
/// `Retry-After` beyond it) and time (503 after the timeout; the admin batch, which can take
/// minutes, is exempt). A slow upload holds no in-flight place: it waits before taking one.
pub(super) async fn limit(State(limits): State<Arc<Limits>>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        // Before hyper answers `Expect: 100-continue`: the client sends nothing of it.
        return body_too_large().into_response();
    }
    // Most requests (GETs) have no body: nothing to read.
    let mut req = if axum::body::HttpBody::size_hint(req.body()).exact() == Some(0) {
        req
    } else {
        match read_body(req, &limits).await {
            Ok(req) => req,
            Err(refused) => return refused,
        }
    };
    let Ok(permit) = limits.in_flight.clone().try_acquire_owned() else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            format!(
                "{} requests in flight, the most this server takes: retry shortly",
                limits.max_in_flight
            ),
        )
        .retry_after(1)
        .into_response();
    };
    // Held here until the response, and by blocking work the handler starts until it ends.
    let place = Arc::new(permit);
    req.extensions_mut().insert(InFlight(place.clone()));
    let response = if route_class(&req) == RouteClass::Admin {
        next.run(req).await
    } else {
        timed(&limits, next.run(req)).await
    };
    drop(place);
    response
}

/// `req` with its body read whole (within the request timeout, at most [`MAX_BODY_BYTES`]), or
/// the answer refusing it (408, 413, 400).
pub(super) async fn read_body(req: Request, limits: &Limits) -> Result<Request, Response> {
    let (parts, body) = req.into_parts();
    let body = match tokio::time::timeout(
        limits.timeout,
        axum::body::to_bytes(body, MAX_BODY_BYTES),
    )
    .await
    {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) => {
            let e = e.into_inner();
            return Err(if e.is::<http_body_util::LengthLimitError>() {
                body_too_large()
            } else {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_body", e.to_string())
            }
            .into_response());
        }
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                    "the request body did not arrive within {:.0} s",
                    limits.timeout.as_secs_f64()
                ),
            )
            .into_response());
        }
    };
    Ok(Request::from_parts(parts, axum::body::Body::from(body)))
}

/// `respond`'s response, or a 503 once `limits.timeout` has passed.
pub(super) async fn timed(limits: &Limits, respond: impl Future<Output = Response>) -> Response {
    match tokio::time::timeout(limits.timeout, respond).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!(
                "the request took longer than {:.0} s; if it posted events, retry it with the same event ids",
                limits.timeout.as_secs_f64()
            ),
        )
        .retry_after(1)
        .into_response(),
    }
}

/// Enforces the access policy before any handler runs: the `Host` name, JSON bodies on write
/// and admin routes, and the bearer token's scope.
pub(super) async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match refusal(&state.auth, &req) {
        Some(refused) => refused.into_response(),
        None => next.run(req).await,
    }
}

/// Why `req` must not be served under `auth`, if it must not.
pub(super) fn refusal(auth: &AuthConfig, req: &Request) -> Option<Response> {
    let class = route_class(req);
    let path = req.extensions().get::<MatchedPath>().map(|p| p.as_str());
    // Probes name whatever host they were configured with (kubelet: the pod's IP) or none
    // (HAProxy's HTTP/1.0 `option httpchk`): they answer without the Host check.
    let probe = matches!(path, Some("/healthz" | "/readyz" | "/metrics"));
    let header = |name: header::HeaderName| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    if !probe && !auth.host_allowed(header(header::HOST).as_deref()) {
        return Some(
            ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                "host_not_allowed",
                "the Host header names a host this server does not serve (see its `allowed_host` setting)",
            )
            .into_response(),
        );
    }
    if (matches!(class, RouteClass::Write | RouteClass::Admin) && req.method() != Method::GET)
        || (class == RouteClass::Catalog && req.method() == Method::POST)
    {
        let json = header(header::CONTENT_TYPE).is_some_and(|t| {
            t.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
        // An admin call's parameters are optional: without a body it needs no content type.
        // (A browser's cross-site request always carries `Origin`: it still needs JSON.)
        let bodiless = class == RouteClass::Admin
            && header(header::CONTENT_TYPE).is_none()
            && header(header::ORIGIN).is_none()
            && header(header::TRANSFER_ENCODING).is_none()
            && header(header::CONTENT_LENGTH).is_none_or(|n| n.trim() == "0");
        if !json && !bodiless {
            return Some(
                ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "this route takes a JSON body: send Content-Type: application/json",
                )
                .into_response(),
            );
        }
    }
    if let Some(scope) = auth.required(class) {
        let presented = header(header::AUTHORIZATION);
        let token = presented.as_deref().and_then(bearer_token);
        let Some(scopes) = token.and_then(|t| auth.tokens.scopes_of(t)) else {
            let mut response = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                format!(
                    "this route needs an API token with the {:?} scope: send Authorization: Bearer TOKEN",
                    scope.name()
                ),
            )
            .into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                "Bearer".parse().expect("valid header"),
            );
            return Some(response);
        };
        // The admin scope may change the catalog too.
        let admin_may = scope == Scope::Catalog && scopes.contains(&Scope::Admin);
        if !scopes.contains(&scope) && !admin_may {
            return Some(
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    format!("this token lacks the {:?} scope", scope.name()),
                )
                .into_response(),
            );
        }
    }
    None
}

/// The token of an `Authorization: Bearer TOKEN` value (the scheme is case-insensitive).
pub(super) fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

pub(super) async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = match req.extensions().get::<MatchedPath>().map(|p| p.as_str()) {
        Some("/v1/users/{user}/recommendations") => "recommendations",
        Some("/v1/users/{user}/profile") => "profile",
        Some("/v1/users/{user}/map") => "map",
        Some("/v1/users") => "users",
        Some("/v1/items/{item}/similar") => "similar",
        Some("/v1/items") => "items",
        Some("/v1/items/delete" | "/v1/items/{item}") => "items_delete",
        Some("/v1/events") => "events",
        Some("/v1/impressions") => "impressions",
        Some("/v1/experiments/{name}/report") => "experiment_report",
        Some("/v1/admin/batch") => "batch",
        Some("/healthz") => "healthz",
        Some("/readyz") => "readyz",
        Some("/metrics") => "metrics",
        Some("/openapi.json") => "openapi",
        Some("/") => "page",
        Some(_) => "other",
        None => "unknown",
    };
    let start = Instant::now();
    let response = next.run(req).await;
    state
        .metrics
        .record(route, response.status().as_u16(), start.elapsed());
    response
}
