//! A minimal keep-alive HTTP/1.1 client over `std::net` for the load generators and for
//! talking to a running server (no TLS, no chunked bodies: pinnersage's server sends neither).
//! It sends the API token in the `PINNERSAGE_TOKEN` environment variable, if set.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};

use anyhow::{Context, Result};

/// A keep-alive HTTP/1.1 connection.
pub struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    /// The `Host` and, when `PINNERSAGE_TOKEN` is set, `Authorization` header lines.
    headers: String,
    /// The `x-pinnersage-*` headers of the last response, `(lowercase name, value)`.
    received: Vec<(String, String)>,
}

impl Conn {
    /// Connects to `addr`.
    pub fn open(addr: SocketAddr) -> Result<Self> {
        let s = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
        s.set_nodelay(true)?;
        let mut headers = format!("Host: {addr}\r\n");
        if let Ok(token) = std::env::var("PINNERSAGE_TOKEN") {
            headers.push_str(&format!("Authorization: Bearer {}\r\n", token.trim()));
        }
        Ok(Self {
            reader: BufReader::new(s.try_clone()?),
            writer: s,
            headers,
            received: Vec::new(),
        })
    }

    /// GETs `path`; returns the status and body.
    pub fn get(&mut self, path: &str) -> Result<(u16, Vec<u8>)> {
        self.get_with(path, "")
    }

    /// GETs `path` with `extra` header lines (each ending in CRLF), without the API token;
    /// returns the status and body.
    pub fn get_without_token(&mut self, path: &str, extra: &str) -> Result<(u16, Vec<u8>)> {
        let host = self.headers.lines().next().unwrap_or_default().to_owned();
        write!(self.writer, "GET {path} HTTP/1.1\r\n{host}\r\n{extra}\r\n")?;
        self.response()
    }

    fn get_with(&mut self, path: &str, extra: &str) -> Result<(u16, Vec<u8>)> {
        write!(
            self.writer,
            "GET {path} HTTP/1.1\r\n{}{extra}\r\n",
            self.headers
        )?;
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
    pub fn post_json(&mut self, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>)> {
        self.send_json(path, body)?;
        self.response()
    }

    /// Sends a POST of a JSON `body` to `path` without waiting for the answer: read it with
    /// [`Conn::response`].
    pub fn send_json(&mut self, path: &str, body: &[u8]) -> Result<()> {
        write!(
            self.writer,
            "POST {path} HTTP/1.1\r\n{}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.headers,
            body.len()
        )?;
        self.writer.write_all(body)?;
        Ok(())
    }

    /// Reads the answer to the request sent last: the status and body.
    pub fn response(&mut self) -> Result<(u16, Vec<u8>)> {
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {line:?}"))?;
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
                    length = value.trim().parse()?;
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
