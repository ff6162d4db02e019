//! Unit tests of the HTTP layer on real sockets.

use std::io::{Read, Write};
use std::net::TcpStream;

use super::*;

/// A server of one slow route (it sleeps `hold`) and one fast one behind [`limit`], on a
/// real socket; stopped when the returned sender is dropped.
fn limited(
    limits: Limits,
    hold: Duration,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let app = Router::new()
        .route(
            "/slow",
            get(move || async move {
                tokio::time::sleep(hold).await;
                "slept"
            }),
        )
        .route(
            "/fast",
            post(|body: Bytes| async move { body.len().to_string() }),
        )
        .layer(middleware::from_fn_with_state(Arc::new(limits), limit));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            let shutdown = async {
                let _ = stopped.await;
            };
            crate::front::serve_connections(listener, app, Duration::from_millis(500), shutdown)
                .await
                .unwrap();
        });
    });
    (addr_rx.recv().unwrap(), stop)
}

/// Sends `head` (and `body`) on a new connection; the whole answer.
fn exchange(addr: std::net::SocketAddr, head: &str, body: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // A server that refuses a request early (414, 431) answers and closes while the rest is
    // still being sent, so the write may fail with a broken pipe or a reset: the answer is
    // already here to read either way.
    let _ = write!(s, "{head}Host: {addr}\r\nConnection: close\r\n\r\n{body}");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    String::from_utf8_lossy(&raw).into_owned()
}

#[test]
fn in_flight_requests_and_their_time_are_bounded() {
    let (addr, _stop) = limited(
        Limits::new(1, Duration::from_millis(500)),
        Duration::from_secs(5),
    );
    // A request that takes too long holds the one place...
    let slow = std::thread::spawn(move || exchange(addr, "GET /slow HTTP/1.1\r\n", ""));
    std::thread::sleep(Duration::from_millis(150));
    // ...so the next request is refused at once, with a hint to come back.
    let refused = exchange(addr, "POST /fast HTTP/1.1\r\nContent-Length: 2\r\n", "{}");
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("\"overloaded\""), "{refused}");
    assert!(
        refused.to_ascii_lowercase().contains("retry-after: 1"),
        "{refused}"
    );
    // The slow request is cut off at the timeout, and the place is free again.
    let raw = slow.join().unwrap();
    assert!(raw.starts_with("HTTP/1.1 503"), "{raw}");
    assert!(raw.to_ascii_lowercase().contains("retry-after: 1"), "{raw}");
    assert!(raw.contains("\"timeout\""), "{raw}");
    let ok = exchange(addr, "POST /fast HTTP/1.1\r\nContent-Length: 2\r\n", "{}");
    assert!(
        ok.starts_with("HTTP/1.1 200") && ok.ends_with("\r\n\r\n2"),
        "{ok}"
    );
}

#[test]
fn a_slow_upload_holds_no_place_and_times_out() {
    let (addr, _stop) = limited(Limits::new(1, Duration::from_millis(500)), Duration::ZERO);
    // Eight uploads that announce a body and send one byte of it...
    let uploads: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            write!(
                s,
                "POST /fast HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 100\r\n\r\n{{"
            )
            .unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    // ...take no in-flight place: other requests are served.
    let ok = exchange(addr, "POST /fast HTTP/1.1\r\nContent-Length: 2\r\n", "{}");
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    // Each is answered 408 once the request timeout has passed.
    for mut s in uploads {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut raw = String::new();
        let _ = s.read_to_string(&mut raw);
        assert!(raw.starts_with("HTTP/1.1 408"), "{raw}");
        assert!(raw.contains("\"body_timeout\""), "{raw}");
    }
    // A body declared over the limit is refused before it is sent (no 100 Continue).
    let raw = exchange(
        addr,
        &format!(
            "POST /fast HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: {}\r\n",
            crate::intake::MAX_BODY_BYTES + 1
        ),
        "",
    );
    assert!(raw.starts_with("HTTP/1.1 413"), "{raw}");
    assert!(raw.contains("\"body_too_large\""), "{raw}");
}

#[test]
fn half_sent_and_idle_connections_are_closed() {
    let (addr, _stop) = limited(Limits::new(4, Duration::from_secs(5)), Duration::ZERO);
    // 200 connections that send half a request head, and one that sends nothing.
    let mut open: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            write!(s, "GET /fast HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ").unwrap();
            s
        })
        .collect();
    open.push(TcpStream::connect(addr).unwrap());
    // Closed by the server at the header timeout (500 ms here), each of them.
    let started = std::time::Instant::now();
    for mut s in open {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut rest = Vec::new();
        let read = s.read_to_end(&mut rest);
        assert!(read.is_ok(), "the server closed it: {read:?}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The server still answers.
    let ok = exchange(addr, "POST /fast HTTP/1.1\r\nContent-Length: 2\r\n", "{}");
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
}

#[test]
fn requests_the_http_layer_cannot_parse_get_json_errors_too() {
    let (addr, _stop) = limited(Limits::new(4, Duration::from_secs(5)), Duration::ZERO);
    let long_url = format!("/fast?filter={}", "a".repeat(70_000));
    let big_header = format!("X-Big: {}\r\n", "b".repeat(600_000));
    for (head, status, code) in [
        (
            "GET /fast?q=a>b HTTP/1.1\r\n".to_owned(),
            "400",
            "bad_request",
        ),
        (
            format!("GET {long_url} HTTP/1.1\r\n"),
            "414",
            "uri_too_long",
        ),
        (
            format!("GET /fast HTTP/1.1\r\n{big_header}"),
            "431",
            "headers_too_large",
        ),
    ] {
        let raw = exchange(addr, &head, "");
        let shown = &raw[..raw.len().min(300)];
        assert!(raw.starts_with(&format!("HTTP/1.1 {status} ")), "{shown}");
        assert!(raw.contains("content-type: application/json"), "{shown}");
        let body = raw.split("\r\n\r\n").nth(1).unwrap_or_default();
        let json: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {shown}"));
        assert_eq!(json["error"]["code"], code, "{shown}");
    }
    // The server goes on answering.
    let ok = exchange(addr, "POST /fast HTTP/1.1\r\nContent-Length: 2\r\n", "{}");
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
}

#[test]
fn bearer_schemes_are_case_insensitive() {
    for value in ["Bearer abc", "bearer abc", "BEARER abc", "  BeArEr   abc "] {
        assert_eq!(bearer_token(value), Some("abc"), "{value:?}");
    }
    for value in ["Basic abc", "Bearer", "Bearer   ", "abc"] {
        assert_eq!(bearer_token(value), None, "{value:?}");
    }
}
