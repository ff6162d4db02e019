//! How a command's failure is told, in one place: its exit code (every library error says its
//! [`ErrorKind`]; the first error in the chain that says one decides) and its message in flag
//! terms (libraries name settings as `` `setting` ``; the CLI shows `--setting`).

use pinnersage_core::error::{ErrorKind, Failure, Kind};

use crate::args::InputError;

/// The exit code of a failure of `kind`: 2 when the user can act on it (fix an input, build
/// what is missing, stop the other process, wait for the service; the message says which), 1
/// for an internal failure (the machine's or a bug). Usage errors are 2 as well (clap's).
///
/// ```
/// use pinnersage::failure::exit_code;
/// use pinnersage_core::error::ErrorKind;
/// assert_eq!(exit_code(ErrorKind::BadInput), 2);
/// assert_eq!(exit_code(ErrorKind::Internal), 1);
/// ```
pub fn exit_code(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::BadInput
        | ErrorKind::NotFound
        | ErrorKind::Conflict
        | ErrorKind::Unavailable => 2,
        ErrorKind::Internal => 1,
    }
}

/// The kind of a command's failure: that of the outermost error in its chain that says one
/// (context lines say none); [`ErrorKind::Internal`] if none does.
pub fn kind_of(e: &anyhow::Error) -> ErrorKind {
    e.chain()
        .find_map(kind_of_cause)
        .unwrap_or(ErrorKind::Internal)
}

/// `cause`'s kind, if it is one of the libraries' errors.
fn kind_of_cause(cause: &(dyn std::error::Error + 'static)) -> Option<ErrorKind> {
    if cause.is::<InputError>() {
        return Some(ErrorKind::BadInput);
    }
    if let Some(f) = cause.downcast_ref::<Failure>() {
        return Some(f.kind);
    }
    macro_rules! kinds {
        ($($error:ty),* $(,)?) => {
            $(if let Some(e) = cause.downcast_ref::<$error>() {
                return Some(Kind::kind(e));
            })*
        };
    }
    kinds!(
        pinnersage_core::CoreError,
        std::io::Error,
        pinnersage_generation::LockError,
        pinnersage_catalog::error::CatalogError,
        pinnersage_catalog::catalog::RowError,
        pinnersage_catalog::filter::FilterError,
        pinnersage_catalog::npy::NpyError,
        pinnersage_catalog::parquet_io::ParquetIoError,
        pinnersage_catalog::synth::SynthError,
        pinnersage_catalog::timestamp::TimestampError,
        pinnersage_index::IndexError,
        pinnersage_index::UnknownName,
        pinnersage_store::events::EventStoreError,
        pinnersage_store::profiles::ProfileStoreError,
        pinnersage_store::settings::SettingsError,
        pinnersage_pipeline::batch::BatchError,
        pinnersage_pipeline::data_in::embed::EmbedError,
        pinnersage_pipeline::data_in::import_events::ImportError,
        pinnersage_pipeline::exchange::import_profiles::ImportProfilesError,
        pinnersage_pipeline::exchange::ship::ShipError,
        pinnersage_engine::EngineError,
        pinnersage_engine::excluded::ExcludedError,
        pinnersage_eval::EvalError,
        pinnersage_server::server::ServeError,
        pinnersage_server::handoff::HandoffError,
        pinnersage_server::client::ClientError,
        pinnersage_server::remote_items::SendItemsError,
        pinnersage_server::auth::TokensError,
        pinnersage_server::nats::NatsError,
    );
    None
}

/// `message` with each `` `setting` `` that names one of `command`'s flags (in any
/// subcommand) written as that flag: libraries speak of settings, the CLI of its flags.
///
/// ```
/// let command = clap::Command::new("x").arg(clap::Arg::new("train").long("train-fraction"));
/// assert_eq!(
///     pinnersage::failure::in_flag_terms("`train_fraction` must be in (0, 1); see `pinnersage x`", &command),
///     "--train-fraction must be in (0, 1); see `pinnersage x`"
/// );
/// ```
pub fn in_flag_terms(message: &str, command: &clap::Command) -> String {
    let mut flags = std::collections::HashSet::new();
    collect_flags(command, &mut flags);
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(open) = rest.find('`') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('`') else {
            break;
        };
        let flag = after[..close].replace('_', "-");
        if flags.contains(flag.as_str()) {
            out.push_str(&rest[..open]);
            out.push_str("--");
            out.push_str(&flag);
            rest = &after[close + 1..];
        } else {
            out.push_str(&rest[..open + 1 + close + 1]);
            rest = &after[close + 1..];
        }
    }
    out.push_str(rest);
    out
}

fn collect_flags<'c>(command: &'c clap::Command, flags: &mut std::collections::HashSet<&'c str>) {
    flags.extend(command.get_arguments().filter_map(clap::Arg::get_long));
    for sub in command.get_subcommands() {
        collect_flags(sub, flags);
    }
}

/// `e` with `hint` (what to type to go on, in flag terms) after its message, keeping its kind.
pub fn with_hint<E: Kind + std::fmt::Display>(e: E, hint: &str) -> anyhow::Error {
    Failure::new(e.kind(), format!("{e}; {hint}")).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;
    use clap::CommandFactory;

    #[test]
    fn every_setting_the_libraries_name_is_a_flag() {
        let command = crate::Cli::command();
        // The settings named in the libraries' messages.
        for setting in [
            "ids",
            "attributes",
            "attributes_id_col",
            "hnsw_library",
            "dim",
            "window_days",
            "now",
            "medoids",
            "global_share",
            "train_fraction",
            "sweep_alphas",
            "sweep_embeddings",
            "walk_forward_days",
            "tune_alphas",
            "tune_global_shares",
            "learned_dim",
            "nats_stream",
            "allowed_host",
            "partitions",
            "consume_partitions",
            "stream_replicas",
            "nats_items_stream",
            "online_actions",
            "reload_seconds",
            "tokens_file",
            "insecure_no_auth",
        ] {
            let message = format!("`{setting}` is wrong");
            let shown = in_flag_terms(&message, &command);
            assert_eq!(shown, format!("--{} is wrong", setting.replace('_', "-")));
        }
        let kept = "run `pinnersage index build` or set `no_such_flag`; `unclosed";
        assert_eq!(in_flag_terms(kept, &command), kept);
    }

    #[test]
    fn the_outermost_error_that_says_its_kind_decides() {
        let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
        let e = Err::<(), _>(missing).context("reading x").unwrap_err();
        assert_eq!(kind_of(&e), ErrorKind::NotFound);
        let busy = pinnersage_store::events::EventStoreError::InUse {
            path: "data/events".into(),
        };
        let batch = pinnersage_pipeline::batch::BatchError::Events(busy);
        assert_eq!(kind_of(&batch.into()), ErrorKind::Conflict);
        assert_eq!(kind_of(&anyhow::anyhow!("what?")), ErrorKind::Internal);
        assert_eq!(kind_of(&InputError("x".into()).into()), ErrorKind::BadInput);
        let refused = pinnersage_pipeline::batch::BatchError::Refused("older".into());
        let hinted = with_hint(refused, "pass --force");
        assert_eq!(kind_of(&hinted), ErrorKind::Conflict);
        assert_eq!(hinted.to_string(), "not published: older; pass --force");
    }
}
