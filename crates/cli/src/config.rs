//! Settings from a TOML file (`--config FILE`) and from `PINNERSAGE_*` environment variables,
//! for the commands that run a deployment (serve, batch, the imports, index build, ship, embed).
//!
//! Every long flag of those commands has a key: its name with `_` for `-` (`--cache-mb` is
//! `cache_mb`), in the command's table (`[serve]`, `[import.events]`, ...) or at the top of the
//! file for every command that has the flag (`data_dir = "/srv/pinnersage"`), and an environment
//! variable `PINNERSAGE_<KEY>` (`PINNERSAGE_CACHE_MB`). Precedence: flags > environment > the
//! command's table > the top of the file > built-in defaults. The mechanism is clap's own: file
//! values become the flags' defaults and the variables their `env`, so `--help` shows the
//! effective defaults and every value goes through the flag's own parser.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::builder::StyledStr;
use clap::error::{ContextKind, ContextValue};
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Args, Command, Subcommand};
use toml::de::{DeTable, DeValue};

use crate::args::{InputError, input};

/// The commands that take a configuration file, as their subcommand paths; `["import",
/// "events"]` is the file's `[import.events]` table.
pub const CONFIGURABLE: &[&[&str]] = &[
    &["serve"],
    &["batch"],
    &["import", "events"],
    &["import", "items"],
    &["import", "profiles"],
    &["index", "build"],
    &["ship"],
    &["embed"],
];

/// The flag naming the file.
const CONFIG_FLAG: &str = "config";
/// The variable naming the file when the flag is absent.
const CONFIG_ENV: &str = "PINNERSAGE_CONFIG";
/// The variable that may hold API tokens (read by `serve`, never printed).
const TOKENS_ENV: &str = "PINNERSAGE_TOKENS";

/// `pinnersage config`: inspect the configuration.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    Show(ShowArgs),
    Example(ExampleArgs),
}

/// Print the effective settings of a command and where each came from.
///
/// Give the command as you would run it, flags included; required inputs (files) may be left
/// out. Each value is printed as a line of the configuration file, with its source: `flag`,
/// `env PINNERSAGE_...`, `FILE:LINE` or `default`. The output is itself a valid table of the
/// file. Secrets are never printed: API tokens are counted, passwords in URLs are masked.
///
/// Precedence: flags > environment (PINNERSAGE_<KEY>) > the command's table of the file > the
/// top of the file > built-in defaults.
///
/// Examples:
///   pinnersage config show serve --config pinnersage.toml
///   PINNERSAGE_CACHE_MB=64 pinnersage config show serve --config pinnersage.toml --seed 7
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct ShowArgs {
    /// The command and its flags, e.g. `serve --config pinnersage.toml`.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    command: Vec<OsString>,
}

/// Print a configuration file with every key, its documentation and its default.
///
/// The repository's examples/pinnersage.toml is this output. Keys without a default (optional
/// settings) are commented out.
#[derive(Debug, Args)]
pub struct ExampleArgs {}

/// Runs `pinnersage config ...`; `root` is the whole command line's definition.
pub fn run(command: &ConfigCommand, root: Command) -> Result<()> {
    match command {
        ConfigCommand::Show(args) => {
            let mut argv = vec![OsString::from("pinnersage")];
            argv.extend(args.command.iter().cloned());
            print!("{}", show(root, &argv)?);
        }
        ConfigCommand::Example(_) => print!("{}", example(root)),
    }
    Ok(())
}

/// A command line's definition with a configuration file's values as the flags' defaults.
pub struct Layered {
    /// The definition to parse the command line with.
    pub command: Command,
    /// The file's values: (section, arg id) -> (file, line).
    from_file: BTreeMap<(String, String), (PathBuf, usize)>,
}

/// Adds `--config` and the `PINNERSAGE_*` variables to the configurable commands of `root` and
/// applies the file that `argv` (or `PINNERSAGE_CONFIG`) names, if any.
///
/// Errors (exit code 2) name the file, the line and the key: unreadable or malformed files,
/// unknown tables or keys, values of the wrong type or that the flag's parser refuses.
pub fn layer(root: Command, argv: &[OsString]) -> Result<Layered, InputError> {
    let mut command = root;
    for path in CONFIGURABLE {
        command = mut_path(command, path, with_config_and_env);
    }
    let Some(file) = config_path(argv) else {
        return Ok(Layered {
            command,
            from_file: BTreeMap::new(),
        });
    };
    let text = std::fs::read_to_string(&file)
        .map_err(|e| InputError(format!("config file {}: {e}", file.display())))?;
    let entries = read_entries(&file, &text)?;
    let mut from_file = BTreeMap::new();
    let mut shared_used = vec![false; entries.len()];
    for path in CONFIGURABLE {
        let section = path.join(".");
        let target = find_path(&command, path).expect("configurable commands exist");
        // The top of the file first, so the command's own table wins.
        let mut assignments: BTreeMap<String, (Vec<String>, usize)> = BTreeMap::new();
        for (i, entry) in entries.iter().enumerate() {
            let shared = entry.section.is_empty();
            if !shared && entry.section != section {
                continue;
            }
            let Some(arg) = configurable_args(target).find(|a| key_of(a) == entry.key) else {
                if shared {
                    continue;
                }
                return Err(unknown_key(&file, entry, target));
            };
            if shared {
                shared_used[i] = true;
            }
            let values =
                values_for(arg, &entry.value).map_err(|e| entry_error(&file, entry, &e))?;
            assignments.insert(arg.get_id().to_string(), (values, entry.line));
        }
        for (id, (values, line)) in assignments {
            from_file.insert((section.clone(), id.clone()), (file.clone(), line));
            command = mut_path(command, path, |c| {
                c.mut_arg(&id, |a| a.default_values(values).required(false))
            });
        }
    }
    let unused = (0..entries.len()).find(|&i| entries[i].section.is_empty() && !shared_used[i]);
    if let Some(i) = unused {
        let entry = &entries[i];
        return Err(entry_error(
            &file,
            entry,
            "no configurable command has this setting",
        ));
    }
    Ok(Layered { command, from_file })
}

impl Layered {
    /// Where the value of `arg` (of the command at `section`) in `matches` came from.
    fn source(&self, section: &str, arg: &Arg, matches: &ArgMatches) -> String {
        let id = arg.get_id().as_str();
        match matches.value_source(id) {
            Some(ValueSource::CommandLine) => "flag".into(),
            Some(ValueSource::EnvVariable) => {
                format!(
                    "env {}",
                    arg.get_env().unwrap_or_default().to_string_lossy()
                )
            }
            Some(ValueSource::DefaultValue) => {
                match self.from_file.get(&(section.to_string(), id.to_string())) {
                    Some((file, line)) => format!("{}:{line}", file.display()),
                    None => "default".into(),
                }
            }
            _ => "unset".into(),
        }
    }
}

/// The effective settings of the command line `argv` as a table of the configuration file.
pub fn show(root: Command, argv: &[OsString]) -> Result<String> {
    let layered = layer(root, argv)?;
    let path = subcommand_path(&layered.command, argv)?;
    // Inputs (files) are not settings: `config show ship` need not name them.
    let command = mut_path(layered.command.clone(), &path, |c| {
        c.mut_args(|a| a.required(false))
    });
    let matches = command
        .clone()
        .try_get_matches_from(argv)
        .map_err(|e| input(e.render().to_string().trim_end()))?;
    let mut leaf = &matches;
    for name in &path {
        leaf = leaf
            .subcommand_matches(name)
            .expect("parsed along the path");
    }
    let target = find_path(&command, &path).expect("path exists");
    let section = path.join(".");
    let mut out = String::new();
    let file = config_path(argv);
    let _ = writeln!(
        out,
        "# `pinnersage {}`: effective settings (config file: {})",
        path.join(" "),
        file.map_or("none".into(), |f| f.display().to_string())
    );
    let _ = writeln!(out, "[{section}]");
    for arg in configurable_args(target) {
        let source = layered.source(&section, arg, leaf);
        let key = key_of(arg);
        match leaf.get_raw(arg.get_id().as_str()) {
            Some(raw) => {
                let values: Vec<String> = raw.map(|v| mask_secret(&v.to_string_lossy())).collect();
                let _ = writeln!(out, "{key} = {}  # {source}", render(arg, &values));
            }
            None => {
                let _ = writeln!(out, "# {key} =  # unset");
            }
        }
    }
    if let Some(tokens) = std::env::var_os(TOKENS_ENV).filter(|_| path == ["serve"]) {
        let count = tokens
            .to_string_lossy()
            .split(['\n', ';'])
            .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .count();
        let _ = writeln!(
            out,
            "# API tokens: {count} entries from {TOKENS_ENV} (never printed)"
        );
    }
    Ok(out)
}

/// A configuration file with every key of every configurable command, its documentation and
/// its default (commented out where there is none).
pub fn example(root: Command) -> String {
    let layered = layer(root, &[]).expect("no file, no error");
    let mut out = String::from(
        "# pinnersage configuration: every key with its default (`pinnersage config example`).\n\
         #\n\
         # Use it with `--config FILE` (or PINNERSAGE_CONFIG=FILE) on serve, batch, import,\n\
         # index build, ship and embed. Every key is a flag's name with `_` for `-`. Precedence:\n\
         # flags > environment (PINNERSAGE_<KEY>, e.g. PINNERSAGE_CACHE_MB) > the command's\n\
         # table > keys at the top of the file (they apply to every command that has them,\n\
         # e.g. data_dir) > built-in defaults. `pinnersage config show serve --config FILE`\n\
         # prints the effective values and where each came from.\n\
         #\n\
         # API tokens never go in this file: use serve's tokens_file or PINNERSAGE_TOKENS.\n",
    );
    for path in CONFIGURABLE {
        let command = find_path(&layered.command, path).expect("path exists");
        let _ = write!(out, "\n[{}]\n", path.join("."));
        let about = command
            .get_about()
            .map(StyledStr::to_string)
            .unwrap_or_default();
        for line in wrap(&format!("pinnersage {}: {about}", path.join(" ")), 96) {
            let _ = writeln!(out, "# {line}");
        }
        for arg in configurable_args(command) {
            out.push('\n');
            let help = arg.get_help().map(StyledStr::to_string).unwrap_or_default();
            for line in wrap(&help, 96) {
                let _ = writeln!(out, "# {line}");
            }
            let key = key_of(arg);
            let defaults = default_values(arg);
            if defaults.is_empty() {
                let _ = writeln!(out, "# {key} = {}", placeholder(arg));
            } else {
                let _ = writeln!(out, "{key} = {}", render(arg, &defaults));
            }
        }
    }
    out
}

/// A flag's built-in default (flags are false until clap fills that in when it builds).
fn default_values(arg: &Arg) -> Vec<String> {
    let values: Vec<String> = arg
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    if values.is_empty() && is_flag(arg) {
        vec![(!matches!(arg.get_action(), ArgAction::SetTrue)).to_string()]
    } else {
        values
    }
}

/// One `key = value` of the file.
struct Entry<'t> {
    /// `""` for the top of the file, else the table's dotted name.
    section: String,
    key: String,
    value: DeValue<'t>,
    line: usize,
}

/// The file's settings, in order, with their lines.
fn read_entries<'t>(file: &Path, text: &'t str) -> Result<Vec<Entry<'t>>, InputError> {
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let parsed = DeTable::parse(text).map_err(|e| {
        let line = e
            .span()
            .map_or(String::new(), |s| format!(":{}", line_of(s.start)));
        InputError(format!(
            "config file {}{line}: {}",
            file.display(),
            e.message()
        ))
    })?;
    let mut entries = Vec::new();
    let sections: Vec<String> = CONFIGURABLE.iter().map(|p| p.join(".")).collect();
    let mut stack: Vec<(String, &DeTable)> = vec![(String::new(), parsed.get_ref())];
    while let Some((prefix, table)) = stack.pop() {
        for (key, value) in table.iter() {
            let line = line_of(key.span().start);
            let name = if prefix.is_empty() {
                key.get_ref().to_string()
            } else {
                format!("{prefix}.{}", key.get_ref())
            };
            match value.get_ref() {
                DeValue::Table(inner) => {
                    if !sections
                        .iter()
                        .any(|s| *s == name || s.starts_with(&format!("{name}.")))
                    {
                        return Err(InputError(format!(
                            "config file {}:{line}: unknown table [{name}]; the tables are {}",
                            file.display(),
                            sections
                                .iter()
                                .map(|s| format!("[{s}]"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )));
                    }
                    stack.push((name, inner));
                }
                _ if !sections.contains(&prefix) && !prefix.is_empty() => {
                    return Err(InputError(format!(
                        "config file {}:{line}: `{name}`: [{prefix}] holds only tables",
                        file.display()
                    )));
                }
                other => {
                    entries.push(Entry {
                        section: prefix.clone(),
                        key: key.get_ref().to_string(),
                        value: other.clone(),
                        line,
                    });
                }
            }
        }
    }
    entries.sort_by_key(|e| e.line);
    Ok(entries)
}

/// An integer in decimal, whatever radix the file wrote it in.
fn integer_text(i: &toml::de::DeInteger<'_>) -> String {
    let digits = i.as_str().replace('_', "");
    match i.radix() {
        10 => digits,
        radix => i128::from_str_radix(&digits, radix).map_or(digits, |v| v.to_string()),
    }
}

/// The flag's values for a file value, checked by the flag's own parser.
fn values_for(arg: &Arg, value: &DeValue<'_>) -> Result<Vec<String>, String> {
    let scalar = |v: &DeValue<'_>| -> Result<String, String> {
        match v {
            DeValue::String(s) => Ok(s.to_string()),
            DeValue::Boolean(b) => Ok(b.to_string()),
            DeValue::Integer(i) => Ok(integer_text(i)),
            DeValue::Float(f) => Ok(f.as_str().to_string()),
            DeValue::Datetime(_) => Err("dates are not settings; write unix seconds".into()),
            DeValue::Array(_) => Err("takes one value, not a list".into()),
            DeValue::Table(_) => Err("takes a value, not a table".into()),
        }
    };
    let values = if is_flag(arg) {
        match value {
            DeValue::Boolean(b) => vec![b.to_string()],
            _ => return Err("takes true or false".into()),
        }
    } else if takes_many(arg) {
        match value {
            DeValue::Array(items) => items
                .iter()
                .map(|item| scalar(item.get_ref()))
                .collect::<Result<_, _>>()?,
            other => vec![scalar(other)?],
        }
    } else {
        vec![scalar(value)?]
    };
    for value in &values {
        check_value(arg, value)?;
    }
    Ok(values)
}

/// Runs `value` through the flag's parser.
fn check_value(arg: &Arg, value: &str) -> Result<(), String> {
    let probe = Command::new("probe").no_binary_name(true).arg(
        Arg::new("value")
            .long("value")
            .action(ArgAction::Set)
            .allow_hyphen_values(true)
            .value_parser(arg.get_value_parser().clone()),
    );
    let shown = mask_secret(value);
    match probe.try_get_matches_from(["--value", value]) {
        Ok(_) => Ok(()),
        Err(e) => Err(match e.get(ContextKind::ValidValue) {
            Some(ContextValue::Strings(valid)) => {
                format!(
                    "invalid value {shown:?}: expected one of {}",
                    valid.join(", ")
                )
            }
            _ => match std::error::Error::source(&e) {
                Some(cause) => format!("invalid value {shown:?}: {cause}"),
                None => format!("invalid value {shown:?}"),
            },
        }),
    }
}

/// The error for a key no flag of the command has, with the closest key when there is one.
fn unknown_key(file: &Path, entry: &Entry, command: &Command) -> InputError {
    let wanted = entry.key.replace('-', "_");
    let hint = configurable_args(command)
        .map(key_of)
        .find(|k| *k == wanted || k.contains(&wanted) || wanted.contains(k.as_str()))
        .map_or(String::new(), |k| format!(" (did you mean `{k}`?)"));
    entry_error(
        file,
        entry,
        &format!(
            "unknown key for `pinnersage {}`{hint}; `pinnersage {} --help` lists its flags",
            entry.section.replace('.', " "),
            entry.section.replace('.', " ")
        ),
    )
}

fn entry_error(file: &Path, entry: &Entry, message: &str) -> InputError {
    let key = if entry.section.is_empty() {
        entry.key.clone()
    } else {
        format!("{}.{}", entry.section, entry.key)
    };
    InputError(format!(
        "config file {}:{}: `{key}`: {message}",
        file.display(),
        entry.line
    ))
}

/// The file named by `--config FILE` / `--config=FILE` in `argv`, else by `PINNERSAGE_CONFIG`.
fn config_path(argv: &[OsString]) -> Option<PathBuf> {
    let flag = format!("--{CONFIG_FLAG}");
    let mut args = argv.iter().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--" {
            break;
        }
        if *arg == *flag {
            return args.next().map(PathBuf::from);
        }
        if let Some(value) = arg
            .to_str()
            .and_then(|a| a.strip_prefix(&format!("{flag}=")))
        {
            return Some(PathBuf::from(value));
        }
    }
    std::env::var_os(CONFIG_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// `--config` and a `PINNERSAGE_<KEY>` variable for every flag that has none.
fn with_config_and_env(command: Command) -> Command {
    command
        .arg(
            Arg::new(CONFIG_FLAG)
                .long(CONFIG_FLAG)
                .value_name("FILE")
                .env(CONFIG_ENV)
                .value_parser(clap::value_parser!(PathBuf))
                .help(
                    "Settings from a TOML file (`pinnersage config example` prints one with \
                     every key); flags and PINNERSAGE_* variables override it",
                ),
        )
        .mut_args(|arg| {
            if arg.get_long().is_none() || is_builtin(&arg) {
                return arg;
            }
            // Values of variables are never shown: they may hold credentials (a NATS URL).
            let arg = arg.hide_env_values(true);
            if arg.get_env().is_none() {
                let env = format!("PINNERSAGE_{}", key_of(&arg).to_uppercase());
                arg.env(env)
            } else {
                arg
            }
        })
}

/// The flags of `command` that have keys.
fn configurable_args(command: &Command) -> impl Iterator<Item = &Arg> {
    command.get_arguments().filter(|a| {
        a.get_long().is_some() && !a.is_hide_set() && !is_builtin(a) && a.get_id() != CONFIG_FLAG
    })
}

fn is_builtin(arg: &Arg) -> bool {
    matches!(arg.get_id().as_str(), "help" | "version")
        || matches!(arg.get_action(), ArgAction::Help | ArgAction::Version)
}

/// The key of a flag: its long name with `_` for `-`.
fn key_of(arg: &Arg) -> String {
    arg.get_long().unwrap_or_default().replace('-', "_")
}

fn is_flag(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse)
}

fn takes_many(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::Append)
        || arg.get_num_args().is_some_and(|n| n.max_values() > 1)
}

fn is_number(arg: &Arg) -> bool {
    use std::any::TypeId;
    let id = arg.get_value_parser().type_id();
    [
        TypeId::of::<u8>(),
        TypeId::of::<u16>(),
        TypeId::of::<u32>(),
        TypeId::of::<u64>(),
        TypeId::of::<usize>(),
        TypeId::of::<i32>(),
        TypeId::of::<i64>(),
        TypeId::of::<f32>(),
        TypeId::of::<f64>(),
    ]
    .iter()
    .any(|t| id == *t)
}

/// Values as TOML: booleans and numbers bare, everything else a string, lists as arrays.
fn render(arg: &Arg, values: &[String]) -> String {
    let one = |v: &String| {
        if is_flag(arg) || (is_number(arg) && v.parse::<f64>().is_ok_and(f64::is_finite)) {
            v.clone()
        } else {
            serde_json::to_string(v).expect("strings serialise")
        }
    };
    if takes_many(arg) {
        format!(
            "[{}]",
            values.iter().map(one).collect::<Vec<_>>().join(", ")
        )
    } else {
        values.first().map(one).unwrap_or_default()
    }
}

/// What an unset key's value looks like, for the example file.
fn placeholder(arg: &Arg) -> String {
    if takes_many(arg) {
        "[]".into()
    } else if is_number(arg) {
        "0".into()
    } else {
        format!(
            "\"{}\"",
            arg.get_value_names()
                .and_then(|n| n.first())
                .map_or("VALUE", |n| n.as_str())
        )
    }
}

/// A value as `config show` prints it: the passwords and tokens of URLs masked.
fn mask_secret(value: &str) -> String {
    pinnersage_server::nats::masked_urls(value)
}

/// Greedy word wrap of a help text (paragraph breaks kept).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for paragraph in text.split("\n\n") {
        let mut line = String::new();
        for word in paragraph.split_whitespace() {
            if !line.is_empty() && line.len() + 1 + word.len() > width {
                lines.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        if !line.is_empty() {
            lines.push(line);
        }
    }
    lines
}

/// The subcommand at `path`.
fn find_path<'c>(command: &'c Command, path: &[&str]) -> Option<&'c Command> {
    path.iter()
        .try_fold(command, |c, name| c.find_subcommand(name))
}

/// Applies `f` to the subcommand at `path`.
fn mut_path(command: Command, path: &[&str], f: impl FnOnce(Command) -> Command) -> Command {
    match path.split_first() {
        None => f(command),
        Some((first, rest)) => command.mut_subcommand(first, |c| mut_path(c, rest, f)),
    }
}

/// The configurable command `argv` runs, as a path.
fn subcommand_path(command: &Command, argv: &[OsString]) -> Result<Vec<&'static str>> {
    let words: Vec<String> = argv
        .iter()
        .skip(1)
        .take_while(|a| !a.to_string_lossy().starts_with('-'))
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    CONFIGURABLE
        .iter()
        .find(|path| words.len() >= path.len() && path.iter().zip(&words).all(|(p, w)| p == w))
        .filter(|path| find_path(command, path).is_some())
        .map(|path| path.to_vec())
        .ok_or_else(|| {
            input(format!(
                "`config show` explains {}; got `{}`",
                CONFIGURABLE
                    .iter()
                    .map(|p| p.join(" "))
                    .collect::<Vec<_>>()
                    .join(", "),
                words.join(" ")
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches};

    fn root() -> Command {
        crate::Cli::command()
    }

    fn argv(args: &[&str]) -> Vec<OsString> {
        std::iter::once("pinnersage")
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect()
    }

    fn write(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ps-config-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pinnersage.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn example_path() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/pinnersage.toml")
    }

    #[test]
    fn the_repository_example_is_the_generated_one() {
        let committed = std::fs::read_to_string(example_path()).unwrap();
        assert!(
            committed == example(root()),
            "examples/pinnersage.toml is stale: run `pinnersage config example > examples/pinnersage.toml`"
        );
    }

    #[test]
    fn the_example_file_parses_and_equals_the_defaults() {
        let path = example_path();
        let layered = layer(
            root(),
            &argv(&["serve", "--config", path.to_str().unwrap()]),
        )
        .unwrap();
        let plain = layer(root(), &argv(&["serve"])).unwrap();
        let mut keys = 0;
        for p in CONFIGURABLE {
            let with_file = find_path(&layered.command, p).unwrap();
            let without = find_path(&plain.command, p).unwrap();
            for arg in configurable_args(without) {
                let from_file = with_file
                    .get_arguments()
                    .find(|a| a.get_id() == arg.get_id())
                    .unwrap();
                assert_eq!(
                    default_values(from_file),
                    default_values(arg),
                    "{}.{}",
                    p.join("."),
                    key_of(arg)
                );
                keys += usize::from(!default_values(arg).is_empty());
            }
        }
        assert!(
            layered.from_file.len() == keys && keys > 40,
            "{keys} keys with defaults"
        );
        // And a whole command line parses with it.
        let matches = layered
            .command
            .try_get_matches_from(argv(&["serve"]))
            .unwrap();
        crate::Cli::from_arg_matches(&matches).unwrap();
    }

    #[test]
    fn flags_beat_the_table_which_beats_the_top_of_the_file() {
        let file = write(
            "precedence",
            "data_dir = \"/srv/shared\"\ncache_mb = 1\n\n[serve]\ncache_mb = 64\nseed = 5\ninsecure_no_auth = true\nallowed_host = [\"a.example\", \"b.example\"]\n\n[batch]\nalpha = 0.7\n",
        );
        let f = file.to_str().unwrap();
        let out = show(root(), &argv(&["serve", "--config", f, "--seed", "9"])).unwrap();
        let line = |key: &str| {
            out.lines()
                .find(|l| l.starts_with(&format!("{key} = ")))
                .unwrap_or_else(|| panic!("{key} in {out}"))
                .to_string()
        };
        assert_eq!(line("seed"), "seed = 9  # flag");
        assert_eq!(line("cache_mb"), format!("cache_mb = 64  # {f}:5"));
        assert_eq!(
            line("data_dir"),
            format!("data_dir = \"/srv/shared\"  # {f}:1")
        );
        assert_eq!(
            line("insecure_no_auth"),
            format!("insecure_no_auth = true  # {f}:7")
        );
        assert_eq!(
            line("allowed_host"),
            format!("allowed_host = [\"a.example\", \"b.example\"]  # {f}:8")
        );
        assert_eq!(line("addr"), "addr = \"127.0.0.1:8080\"  # default");
        let batch = show(root(), &argv(&["batch", "--config", f])).unwrap();
        assert!(batch.contains(&format!("alpha = 0.7  # {f}:11")), "{batch}");
        assert!(
            batch.contains(&format!("data_dir = \"/srv/shared\"  # {f}:1")),
            "{batch}"
        );
        // The typed arguments the command runs with.
        let layered = layer(root(), &argv(&["batch", "--config", f])).unwrap();
        let matches = layered
            .command
            .try_get_matches_from(argv(&["batch", "--config", f]))
            .unwrap();
        let cli = crate::Cli::from_arg_matches(&matches).unwrap();
        let crate::Command::Batch(args) = cli.command else {
            panic!("batch")
        };
        assert_eq!(args.data.data_dir, PathBuf::from("/srv/shared"));
        assert_eq!(args.profile.alpha, 0.7);
        std::fs::remove_dir_all(file.parent().unwrap()).unwrap();
    }

    #[test]
    fn unknown_keys_tables_and_bad_values_name_the_file_line_and_key() {
        let cases = [
            (
                "[serve]\naddr = \"127.0.0.1:1\"\ncache_megabytes = 3\n",
                ":3: `serve.cache_megabytes`: unknown key",
            ),
            ("[serve]\ncache-mb = 3\n", "(did you mean `cache_mb`?)"),
            ("[servr]\nseed = 1\n", ":1: unknown table [servr]"),
            (
                "[serve]\nseed = -3\n",
                ":2: `serve.seed`: invalid value \"-3\"",
            ),
            (
                "[serve]\nresample = \"hourly\"\n",
                "invalid value \"hourly\": unknown resample policy",
            ),
            (
                "[serve]\ninsecure_no_auth = \"yes\"\n",
                "takes true or false",
            ),
            ("[serve]\naddr = [\"a\"]\n", "takes one value, not a list"),
            (
                "color = \"red\"\n",
                ":1: `color`: no configurable command has this setting",
            ),
            ("[serve]\nseed = \n", "config file"),
            (
                "[import]\nskip_invalid = true\n",
                "[import] holds only tables",
            ),
            // A secret in a bad value is masked in the error.
            (
                "[serve]\naddr = \"app:s3cret@reco.internal\"\n",
                "invalid value \"app:***@reco.internal\"",
            ),
        ];
        for (i, (text, expected)) in cases.iter().enumerate() {
            let file = write(&format!("bad{i}"), text);
            let err = match layer(
                root(),
                &argv(&["serve", "--config", file.to_str().unwrap()]),
            ) {
                Ok(_) => panic!("{text:?} was accepted"),
                Err(e) => e.to_string(),
            };
            assert!(err.contains(expected), "{text:?}: {err}");
            assert!(!err.contains("s3cret"), "{text:?}: {err}");
            assert!(err.contains(file.to_str().unwrap()), "{err}");
            std::fs::remove_dir_all(file.parent().unwrap()).unwrap();
        }
    }

    #[test]
    fn passwords_in_urls_are_masked() {
        assert_eq!(
            mask_secret("nats://app:s3cret@n1:4222,nats://n2:4222"),
            "nats://app:***@n1:4222,nats://n2:4222"
        );
        assert_eq!(mask_secret("nats://tok3n@n1:4222"), "nats://***@n1:4222");
        assert_eq!(mask_secret("app:s3cret@n1:4222"), "app:***@n1:4222");
        assert_eq!(mask_secret("127.0.0.1:8080"), "127.0.0.1:8080");
    }
}
