//! `pinnersage items put|delete`: item changes from a file, sent to a running server.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Result;
use clap::{Args, Subcommand};
use pinnersage_server::client::Conn;
use pinnersage_server::remote_items::{ItemsAction, send_items};

use crate::args::InputError;
use crate::progress::Progress;

/// Add, replace or delete items of a running server's catalog, from a file.
///
/// The changes go through the server's API (POST /v1/items, /v1/items/delete) in requests of
/// --batch items, each durable and served before the next is sent; a refused item stops the run
/// with its file and line (the requests before it were applied). When the server has tokens,
/// put one with the `catalog` (or `admin`) scope in PINNERSAGE_TOKEN.
///
/// Examples:
///   pinnersage items put new-items.jsonl --server http://127.0.0.1:8080
///   pinnersage items delete taken-down.txt --server 127.0.0.1:8080
#[derive(Debug, Subcommand)]
#[command(verbatim_doc_comment)]
pub enum ItemsCommand {
    /// Add or replace items: JSON lines, {"id": "...", "embedding": [...], "attributes": {...}}
    /// (the embedding alone keeps the attributes; the attributes alone keep the vector).
    Put(ItemsArgs),
    /// Delete items: one id a line (or JSON lines with an "id").
    Delete(ItemsArgs),
}

/// The file and the server.
#[derive(Debug, Args)]
pub struct ItemsArgs {
    /// The file of changes (blank lines and lines starting with # are skipped).
    file: PathBuf,
    /// The server: http://HOST:PORT or HOST:PORT.
    #[arg(long)]
    server: String,
    /// Items per request (1 to 10,000).
    #[arg(long, default_value_t = 1_000)]
    batch: usize,
}

/// Runs `pinnersage items ...`.
pub fn run(command: &ItemsCommand) -> Result<()> {
    let (action, args) = match command {
        ItemsCommand::Put(args) => (ItemsAction::Put, args),
        ItemsCommand::Delete(args) => (ItemsAction::Delete, args),
    };
    if !(1..=pinnersage_server::http::MAX_ITEMS_PER_REQUEST).contains(&args.batch) {
        return Err(InputError(format!(
            "--batch must be in 1..={}, got {}",
            pinnersage_server::http::MAX_ITEMS_PER_REQUEST,
            args.batch
        ))
        .into());
    }
    let addr = server_addr(&args.server)?;
    let token = std::env::var("PINNERSAGE_TOKEN").ok();
    let mut conn = Conn::open(addr)?.with_token(token.as_deref());
    let sent = send_items(
        &mut conn,
        action,
        &args.file,
        args.batch,
        &Spinner::default(),
    )?;
    let held = match sent.seq {
        Some(seq) => format!("journal at {seq}"),
        None => "held by the fleet's stream".into(),
    };
    println!(
        "{} items upserted, {} deleted, {} found nothing to change, in {} requests to \
         http://{addr} ({held})",
        sent.upserted, sent.deleted, sent.skipped, sent.requests
    );
    Ok(())
}

/// The address of `--server` (`http://` and a trailing `/` allowed).
pub(crate) fn server_addr(server: &str) -> Result<SocketAddr> {
    if server.starts_with("https://") {
        return Err(InputError(format!(
            "--server {server}: pinnersage speaks plain HTTP; reach a TLS endpoint through its \
             proxy's plain address"
        ))
        .into());
    }
    let bare = server
        .strip_prefix("http://")
        .unwrap_or(server)
        .trim_end_matches('/');
    bare.to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| {
            InputError(format!(
                "--server {server}: expected HOST:PORT or http://HOST:PORT"
            ))
            .into()
        })
}

/// A spinner counting the items sent.
#[derive(Default)]
struct Spinner {
    shown: std::sync::Mutex<Option<Progress>>,
    done: AtomicU64,
}

impl pinnersage_core::progress::Progress for Spinner {
    fn phase(&self, _name: &str, _total: u64) {}

    fn advance(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        if let Ok(mut shown) = self.shown.lock() {
            shown
                .get_or_insert_with(|| Progress::new("items sent", None))
                .update(done);
        }
    }

    fn finish(&self) {
        if let Some(p) = self.shown.lock().ok().and_then(|mut s| s.take()) {
            p.finish();
        }
    }
}
