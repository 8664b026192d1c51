//! `mse-proxy state export` and `mse-proxy state import`: the durable
//! state (`crate::state`) as JSON (`crate::state::export`), for backups,
//! moves to a new machine and upgrades.
//!
//! Both open `state.redb` themselves, so they run while no proxy holds
//! it: redb locks the file for one process, and the second opener is
//! refused, which is said plainly. Import checks every entry with the
//! reconciler's own checks (`plan_import`) against this config's routes
//! file, certificates and `[apps]` policy, then writes all of it in one
//! transaction, or nothing.
//!
//! Semantics: by default an import *merges*: each imported route replaces
//! the stored route of the same name, each imported app the stored app of
//! the same (project, name); other stored entries stay. `--replace` makes
//! the import the whole state: stored entries it does not name are
//! deleted, in the same transaction. Entries whose expiry has passed are
//! left out and listed (the start would drop them too).
//!
//! With `[etcd]`, export writes the instance's local cache of etcd (what
//! it last read there), and import writes into etcd through a running
//! instance's admin API (`etcd.rs` says why, and how it stays all or
//! nothing).

mod etcd;
mod failure;

use failure::{runtime, Failure};
pub use failure::{EXIT_INVALID, EXIT_RUNTIME};

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::state::export::{self, Export};

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Where to write the JSON (replaced atomically); `-` or absent: stdout.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The JSON to import (as `state export` writes it); `-` or absent: stdin.
    #[arg(long, short, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Make the import the whole state: stored routes and apps it does not
    /// name are deleted. Without it, imported entries replace stored ones
    /// of the same name (apps: project and name) and the others stay.
    #[arg(long)]
    pub replace: bool,
    /// With [etcd]: the admin API of a running instance to write through
    /// (default: the config's [admin] address). Its token is the config's.
    #[arg(long, value_name = "URL")]
    pub apply: Option<String>,
}

/// `-` and absent both mean the standard stream.
fn named(p: &Option<PathBuf>) -> Option<&Path> {
    p.as_deref().filter(|p| *p != Path::new("-"))
}

fn state_dir(config: &Config) -> Result<&Path, Failure> {
    config.state_dir.as_deref().ok_or_else(|| {
        Failure(
            EXIT_INVALID,
            format!("{}: no state_dir", config.source.display()),
        )
    })
}

/// Opens the store of `dir` for this command, saying what to do when a
/// running proxy holds it.
fn open(dir: &Path, name: &str) -> Result<std::sync::Arc<dyn crate::state::StateStore>, Failure> {
    crate::state::open_file(dir, name).map_err(|e| {
        let msg = e.to_string();
        if msg.contains("in use by another process") {
            Failure(
                EXIT_RUNTIME,
                format!("{msg}\nstop the proxy that uses this state_dir first: state export and import open the store themselves"),
            )
        } else {
            Failure(EXIT_RUNTIME, msg)
        }
    })
}

/// `mse-proxy state export`: returns the exit code.
pub fn export(config_path: &Path, args: &ExportArgs, err: &mut dyn Write) -> u8 {
    match try_export(config_path, args, err) {
        Ok(()) => 0,
        Err(Failure(code, msg)) => {
            let _ = writeln!(err, "error: {msg}");
            code
        }
    }
}

fn try_export(config_path: &Path, args: &ExportArgs, err: &mut dyn Write) -> Result<(), Failure> {
    let config = Config::load(config_path)?;
    let dir = state_dir(&config)?;
    // With `[etcd]`, what this instance last read from etcd (its cache):
    // the way back from etcd to a single instance, or a look at it.
    let name = match config.etcd {
        None => crate::state::FILE_NAME,
        Some(_) => crate::state::ETCD_CACHE_FILE,
    };
    let file = dir.join(name);
    if !file.is_file() {
        return Err(runtime(format!(
            "{}: no state here yet (nothing was ever written to it)",
            file.display()
        )));
    }
    let stored = open(dir, name)?.load().map_err(runtime)?;
    for why in &stored.unreadable {
        let _ = writeln!(err, "warning: left out of the export: {why}");
    }
    let (routes, apps) = (stored.routes.len(), stored.apps.len());
    let json = Export::of(stored).to_json();
    match named(&args.output) {
        Some(path) => write_atomically(path, &json)
            .map_err(|e| runtime(format!("{}: {e}", path.display())))?,
        None => std::io::stdout()
            .write_all(&json)
            .map_err(|e| runtime(format!("stdout: {e}")))?,
    }
    let _ = writeln!(
        err,
        "exported {routes} route(s) and {apps} app(s) from {}",
        file.display()
    );
    Ok(())
}

/// Writes `bytes` to a new file beside `path`, fsyncs it and renames it
/// over `path`, then fsyncs the directory: a backup is whole or absent,
/// never half written, and survives a power cut once this returns.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("not a file name"))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// `mse-proxy state import`: returns the exit code.
pub fn import(config_path: &Path, args: &ImportArgs, err: &mut dyn Write) -> u8 {
    match try_import(config_path, args, err) {
        Ok(()) => 0,
        Err(Failure(code, msg)) => {
            let _ = writeln!(err, "error: {msg}");
            let _ = writeln!(err, "nothing was imported");
            code
        }
    }
}

fn try_import(config_path: &Path, args: &ImportArgs, err: &mut dyn Write) -> Result<(), Failure> {
    let input_name = named(&args.input)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("stdin"));
    let invalid = |e: String| Failure(EXIT_INVALID, format!("{}: {e}", input_name.display()));
    let import = match named(&args.input) {
        Some(path) => {
            let f = std::fs::File::open(path).map_err(|e| invalid(e.to_string()))?;
            export::read(f)
        }
        None => export::read(std::io::stdin().lock()),
    }
    .map_err(invalid)?;
    // The same checks as `mse-proxy check`, then the certificates they
    // serve: an import is judged against what this proxy will start with.
    let (config, file_routes) = crate::server::check(config_path)?;
    if config.etcd.is_some() {
        if args.replace {
            return Err(Failure(
                EXIT_INVALID,
                "--replace with [etcd]: an import into etcd only adds; it never deletes what the other instances wrote".into(),
            ));
        }
        let url = etcd::admin_url(&config, args.apply.as_deref())?;
        return etcd::import(&config, url, import, &input_name, err);
    }
    if args.apply.is_some() {
        return Err(Failure(
            EXIT_INVALID,
            "--apply is for a config with [etcd]; without it the import writes the state_dir"
                .into(),
        ));
    }
    let certs = crate::server::load_certs(&config, &file_routes)?;
    let dir = state_dir(&config)?;
    let store = open(dir, crate::state::FILE_NAME)?;
    let current = store.load().map_err(runtime)?;
    let plan = crate::routing::reconciler::state::plan_import(
        &config,
        &file_routes,
        &certs,
        current,
        import,
        args.replace,
        &input_name,
    )?;
    for e in &plan.expired {
        let _ = writeln!(err, "left out, its expiry has passed: {e}");
    }
    if args.replace {
        store.replace(&plan.routes, &plan.apps)
    } else {
        let changes: Vec<crate::state::Change> = plan
            .routes
            .iter()
            .cloned()
            .map(crate::state::Change::PutRoute)
            .chain(plan.apps.iter().cloned().map(crate::state::Change::PutApp))
            .collect();
        store.commit(&changes)
    }
    .map_err(runtime)?;
    let _ = writeln!(
        err,
        "imported {} route(s) and {} app(s) into {} ({})",
        plan.routes.len(),
        plan.apps.len(),
        dir.join(crate::state::FILE_NAME).display(),
        if args.replace { "replaced" } else { "merged" }
    );
    Ok(())
}
