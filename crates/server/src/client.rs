//! A minimal keep-alive HTTP/1.1 client over `std::net`, for talking to a pinnersage server:
//! the hand-off of commands ([`crate::handoff::Handoff`]) and the load generators. No TLS and no
//! chunked bodies: the server sends neither.
//!
//! ```no_run
//! use pinnersage_server::client::Conn;
//! let mut conn = Conn::open("127.0.0.1:8080".parse().unwrap())?.with_token(Some("t0k3n"));
//! let (status, body) = conn.get("/v1/users/u1/recommendations?k=10")?;
//! # Ok::<(), pinnersage_server::client::ClientError>(())
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection.
    #[error("connecting to {addr}: {source}")]
    Connect {
        /// The server's address.
        addr: SocketAddr,
        /// What the system said.
        source: std::io::Error,
    },
    /// The connection failed while sending or receiving.
    #[error("talking to the server: {0}")]
    Io(#[from] std::io::Error),
    /// The answer is not HTTP/1.1 as the server sends it.
    #[error("the server's answer is malformed: {0}")]
    Malformed(String),
}

/// A keep-alive HTTP/1.1 connection.
pub struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    /// The `Host` header line.
    host: String,
    /// The `Authorization` header line, when a token is set.
    authorization: String,
    /// The `x-pinnersage-*` headers of the last response, `(lowercase name, value)`.
    received: Vec<(String, String)>,
    /// The request being sent, reused ([`Conn::send`]).
    request: Vec<u8>,
}

impl Conn {
    /// Connects to `addr`.
    pub fn open(addr: SocketAddr) -> Result<Self, ClientError> {
        let connect = |source| ClientError::Connect { addr, source };
        let s = TcpStream::connect(addr).map_err(connect)?;
        s.set_nodelay(true)?;
        Ok(Self {
            reader: BufReader::new(s.try_clone()?),
            writer: s,
            host: format!("Host: {addr}\r\n"),
            authorization: String::new(),
            received: Vec::new(),
            request: Vec::new(),
        })
    }

    /// Sends `token` as the bearer token of every request but [`Conn::get_without_token`].
    pub fn with_token(mut self, token: Option<&str>) -> Self {
        self.authorization = token.map_or_else(String::new, |t| {
            format!("Authorization: Bearer {}\r\n", t.trim())
        });
        self
    }

    /// GETs `path`; returns the status and body.
    pub fn get(&mut self, path: &str) -> Result<(u16, Vec<u8>), ClientError> {
        let (host, authorization) = (&self.host, &self.authorization);
        let head = format_args!("GET {path} HTTP/1.1\r\n{host}{authorization}\r\n");
        Self::send(&mut self.writer, &mut self.request, head, b"")?;
        self.response()
    }

    /// Sends a request, `head` then `body`, in one write from the reused buffer `request`
    /// (one TCP segment with `TCP_NODELAY`, not one per formatted piece).
    fn send(
        writer: &mut TcpStream,
        request: &mut Vec<u8>,
        head: std::fmt::Arguments<'_>,
        body: &[u8],
    ) -> Result<(), ClientError> {
        request.clear();
        request.write_fmt(head)?;
        request.extend_from_slice(body);
        writer.write_all(request)?;
        Ok(())
    }

    /// GETs `path` with `extra` header lines (each ending in CRLF), without the API token;
    /// returns the status and body.
    pub fn get_without_token(
        &mut self,
        path: &str,
        extra: &str,
    ) -> Result<(u16, Vec<u8>), ClientError> {
        let head = format_args!("GET {path} HTTP/1.1\r\n{}{extra}\r\n", self.host);
        Self::send(&mut self.writer, &mut self.request, head, b"")?;
        self.response()
    }

    /// The value of the `x-pinnersage-*` header `name` (case-insensitive) in the last response.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.received
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// POSTs a JSON `body` to `path`; returns the status and body.
    pub fn post_json(&mut self, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>), ClientError> {
        self.send_json(path, body)?;
        self.response()
    }

    /// Sends a POST of a JSON `body` to `path` without waiting for the answer: read it with
    /// [`Conn::response`].
    pub fn send_json(&mut self, path: &str, body: &[u8]) -> Result<(), ClientError> {
        let head = format_args!(
            "POST {path} HTTP/1.1\r\n{}{}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.host,
            self.authorization,
            body.len()
        );
        Self::send(&mut self.writer, &mut self.request, head, body)
    }

    /// Reads the answer to the request sent last: the status and body.
    pub fn response(&mut self) -> Result<(u16, Vec<u8>), ClientError> {
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ClientError::Malformed(format!("status line {line:?}")))?;
        let mut length = 0usize;
        self.received.clear();
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((name, value)) = l.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value
                        .trim()
                        .parse()
                        .map_err(|_| ClientError::Malformed(format!("header {l:?}")))?;
                }
                let name = name.to_ascii_lowercase();
                if name.starts_with("x-pinnersage-") {
                    self.received.push((name, value.trim().to_owned()));
                }
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body)?;
        Ok((status, body))
    }
}

impl pinnersage_core::error::Kind for ClientError {
    fn kind(&self) -> pinnersage_core::error::ErrorKind {
        use pinnersage_core::error::ErrorKind::*;
        match self {
            Self::Connect { .. } | Self::Io(_) => Unavailable,
            Self::Malformed(_) => Internal,
        }
    }
}
