//! The listener: connections accepted from the moment it is bound, answered by the starting
//! front while the server opens (its data directory, its NATS consumers), then by the API.
//!
//! A server with a long event journal takes seconds to open, and a fleet replica waits for its
//! NATS stream; meanwhile probes and clients get answers instead of a connection that hangs:
//! `/readyz` answers 503 with what the server waits for, `/healthz` 200 `"starting"` (the
//! process is alive: a liveness probe must not restart it), every other route 503 `starting`
//! with `Retry-After: 1`.

use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;

use crate::http::{AppState, router};
use pinnersage_engine::engine::EngineError;

/// How long a connection may take to send a request's head, and stay idle between requests, by
/// default: then it is closed (half-sent requests cannot hold connections open forever).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// A bound listener being served: first the starting front, then the API ([`Front::install`]).
pub struct Front {
    addr: std::net::SocketAddr,
    /// The API, once installed (until then the starting answers).
    api: Arc<OnceLock<Router>>,
    waiting: Arc<Mutex<String>>,
    connections: tokio::task::JoinHandle<std::io::Result<()>>,
    reloader: Option<tokio::task::JoinHandle<()>>,
}

impl Front {
    /// Starts answering on `listener` (on the current tokio runtime) until `shutdown`
    /// completes; a connection that sends no complete request head within `header_timeout`,
    /// idle or half-sent, is closed.
    pub fn start(
        listener: tokio::net::TcpListener,
        header_timeout: Duration,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<Self> {
        let waiting = Arc::new(Mutex::new("opening the data directory".to_owned()));
        let api = Arc::new(OnceLock::new());
        Self::start_with(listener, api, waiting, header_timeout, shutdown)
    }

    /// Like [`Front::start`], answering the API of `state` from the first connection (and
    /// reloading as [`Front::install`] does).
    pub fn start_serving(
        listener: tokio::net::TcpListener,
        state: AppState,
        reload: Duration,
        header_timeout: Duration,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<Self> {
        let waiting = Arc::new(Mutex::new(String::new()));
        let api = Arc::new(OnceLock::from(router(state.clone())));
        let mut front = Self::start_with(listener, api, waiting, header_timeout, shutdown)?;
        front.reloader = Some(tokio::spawn(reload_every(state, reload)));
        Ok(front)
    }

    fn start_with(
        listener: tokio::net::TcpListener,
        api: Arc<OnceLock<Router>>,
        waiting: Arc<Mutex<String>>,
        header_timeout: Duration,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let connections = tokio::spawn(serve_switched(
            listener,
            api.clone(),
            starting(waiting.clone()),
            header_timeout,
            shutdown,
        ));
        Ok(Self {
            addr,
            api,
            waiting,
            connections,
            reloader: None,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Says what the server waits for now (shown by `/readyz` and in every 503 until served).
    pub fn waiting_for(&self, what: impl Into<String>) {
        *self.waiting.lock().unwrap_or_else(PoisonError::into_inner) = what.into();
    }

    /// Answers the API of `state` from now on, reloading the profile generation and the
    /// exclusion list every `reload` (once: a front serves one API).
    pub fn install(&mut self, state: AppState, reload: Duration) {
        if self.api.set(router(state.clone())).is_ok() {
            self.reloader = Some(tokio::spawn(reload_every(state, reload)));
        }
    }

    /// Waits until the shutdown given to [`Front::start`] completes and the requests in flight
    /// are answered.
    pub async fn finish(self) -> std::io::Result<()> {
        let result = self
            .connections
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        if let Some(reloader) = self.reloader {
            reloader.abort();
        }
        result
    }

    /// Stops answering (the server could not open): in-flight requests finish first.
    pub async fn close(self) {
        self.connections.abort();
        let _ = self.connections.await;
    }
}

/// The answers while the server opens.
fn starting(waiting: Arc<Mutex<String>>) -> Router {
    let now = move || {
        waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    };
    let (ready, health, other) = (now.clone(), now.clone(), now);
    let body = |status: &str, what: String| json!({"status": status, "waiting_for": [what]});
    Router::new()
        .route(
            "/readyz",
            get(move || async move {
                let body = body("not_ready", ready());
                (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body))
            }),
        )
        .route(
            "/healthz",
            get(move || async move { axum::Json(body("starting", health())) }),
        )
        .fallback(move || async move {
            let message = format!("the server is starting ({}): retry shortly", other());
            let mut response = (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({"error": {"code": "starting", "message": message}})),
            )
                .into_response();
            response.headers_mut().insert(header::RETRY_AFTER, 1.into());
            response
        })
}

/// Every `reload`: switches to a new profile generation or exclusion list when one appeared,
/// and to a new catalog or index generation (opened beside the served one, which answers
/// meanwhile: see `pinnersage_engine::serving`).
async fn reload_every(state: AppState, reload: Duration) {
    let serving = state.serving;
    let mut tick = tokio::time::interval(reload);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if serving.fold_due() {
            let folder = serving.clone();
            tokio::task::spawn_blocking(move || match folder.fold(&()) {
                Ok(Some(r)) => match &r.folded {
                    Some(f) => eprintln!(
                        "folded the catalog's changes: {} items, {} rows dropped, {} deleted \
                         items kept for profiles (catalog {:.1} s, index {:.1} s){}",
                        f.live,
                        f.dropped,
                        f.kept_deleted,
                        r.catalog_seconds,
                        r.index_seconds,
                        if r.swapped.is_some() { ", served" } else { "" }
                    ),
                    None => eprintln!(
                        "indexed the current catalog generation ({:.1} s){}",
                        r.index_seconds,
                        if r.swapped.is_some() { ", served" } else { "" }
                    ),
                },
                Ok(None) => {}
                Err(e) => eprintln!("folding the catalog's changes failed (retried later): {e}"),
            });
        }
        let follower = serving.clone();
        tokio::task::spawn_blocking(move || match follower.follow() {
            Ok(Some(s)) => eprintln!(
                "serving catalog {} with index {} ({} item changes replayed on top, {} medoid \
                 lists made for its cache; {:.1} s, item changes paused {:.0} ms)",
                s.catalog.display(),
                s.index.display(),
                s.replayed,
                s.warmed,
                s.seconds,
                s.paused_seconds * 1e3
            ),
            Ok(None) => {}
            Err(e) => eprintln!(
                "a new catalog or index generation cannot be served (still serving the \
                 previous one): {e}"
            ),
        });
        let engine = serving.engine();
        let (profiles, excluded) = tokio::task::spawn_blocking(move || {
            (engine.reload_profiles(), engine.reload_excluded())
        })
        .await
        .unwrap_or_else(|e| {
            let failed = EngineError::Internal(e.to_string());
            (Err(failed.clone()), Err(failed))
        });
        match profiles {
            Ok(true) => eprintln!("serving a new profile generation"),
            Err(e) => {
                eprintln!("profile reload failed (still serving the previous generation): {e}")
            }
            _ => {}
        }
        match excluded {
            Ok(Some(list)) => eprintln!(
                "exclusion list: {} items excluded ({} unknown ids ignored)",
                list.len(),
                list.unknown
            ),
            Err(e) => eprintln!("{e} (the previous list stays)"),
            _ => {}
        }
    }
}

/// Serves `api` once it is set, `starting` until then (one atomic load per request).
async fn serve_switched(
    listener: tokio::net::TcpListener,
    api: Arc<OnceLock<Router>>,
    starting: Router,
    header_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let current = move || api.get().unwrap_or(&starting).clone();
    serve_with(listener, current, header_timeout, shutdown).await
}

/// Accepts connections on `listener` and serves `app` on each (HTTP/1.1; a connection that
/// sends no complete request head within `header_timeout`, idle or half-sent, is closed) until
/// `shutdown` completes, then waits for open requests to finish.
#[cfg(test)]
pub(crate) async fn serve_connections(
    listener: tokio::net::TcpListener,
    app: Router,
    header_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, move || app.clone(), header_timeout, shutdown).await
}

/// The connection loop of [`serve_connections`], taking the router for each request from `app`.
async fn serve_with(
    listener: tokio::net::TcpListener,
    app: impl Fn() -> Router + Clone + Send + Sync + 'static,
    header_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
                    if !matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset) {
                        // Out of file descriptors, say: wait for some to close.
                        eprintln!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let app = app.clone();
        let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            use tower_service::Service;
            app().call(req.map(axum::body::Body::new))
        });
        let stream = TokioIo::new(JsonErrors::new(stream));
        let connection = graceful.watch(http.serve_connection(stream, service));
        tokio::spawn(async move {
            // A client that went away or timed out is nothing to report.
            let _ = connection.await;
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Serves `router(state)` on `listener` until `shutdown` completes, then finishes in-flight
/// requests. Reloads the profile generation every `reload` when a batch publishes a new one.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    reload: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let header_timeout = state.limits.header_timeout();
    Front::start_serving(listener, state, reload, header_timeout, shutdown)?
        .finish()
        .await
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// Gives the answers hyper sends by itself, to requests it cannot parse (a URL over 64 KiB: 414,
/// headers over its buffer: 431, a malformed request line such as a raw `>` in the query: 400),
/// the JSON error body every other answer has: hyper writes them without a body and offers no
/// hook, so the connection's writes are watched for such a head (this server's own 400s always
/// carry a body) and it is replaced. Everything else passes through unchanged.
struct JsonErrors<S> {
    inner: S,
    /// A replacement being written: the bytes, how many are written, and the length of the
    /// write it stands for (reported once all are written).
    replacing: Option<(Vec<u8>, usize, usize)>,
}

impl<S> JsonErrors<S> {
    fn new(inner: S) -> Self {
        Self {
            inner,
            replacing: None,
        }
    }
}

/// The JSON answer standing for `head` when it is one of hyper's bodiless parse-error answers.
fn json_error_for(head: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(head).ok()?;
    let status_line = text
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| text.strip_prefix("HTTP/1.0 "))?;
    let (code, message) = match status_line.get(..4)? {
        "400 " => (
            "bad_request",
            "the request could not be parsed (a character not allowed in the URL, or a malformed request line or header)",
        ),
        "414 " => ("uri_too_long", "the URL is over 64 KiB"),
        "431 " => ("headers_too_large", "the request's headers are too large"),
        _ => return None,
    };
    let lower = text.to_ascii_lowercase();
    if !text.ends_with("\r\n\r\n") || !lower.contains("\r\ncontent-length: 0\r\n") {
        return None;
    }
    let status = &status_line[..3];
    let reason = status_line.lines().next()?.get(4..)?;
    let body = json!({"error": {"code": code, "message": message}}).to_string();
    Some(
        format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for JsonErrors<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for JsonErrors<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        use std::task::Poll;
        let this = &mut *self;
        if this.replacing.is_none()
            && let Some(replacement) = json_error_for(buf)
        {
            this.replacing = Some((replacement, 0, buf.len()));
        }
        let Some((bytes, written, stands_for)) = &mut this.replacing else {
            return std::pin::Pin::new(&mut this.inner).poll_write(cx, buf);
        };
        while *written < bytes.len() {
            match std::pin::Pin::new(&mut this.inner).poll_write(cx, &bytes[*written..]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => *written += n,
                other => return other,
            }
        }
        let reported = *stands_for;
        this.replacing = None;
        Poll::Ready(Ok(reported))
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        // hyper's own error answer is one head, in one slice.
        let mut slices = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(only), None) = (slices.next(), slices.next())
            && (self.replacing.is_some() || json_error_for(only).is_some())
        {
            return self.poll_write(cx, only);
        }
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
