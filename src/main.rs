//! The `mse-proxy` binary: parse the CLI, set up tracing, load config, start
//! the runtime, map errors to exit codes. Everything else is in the library.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mse_proxy::config::{Config, LogFormat};
use mse_proxy::{server, upgrade};

/// jemalloc (see Cargo.toml): aligned allocations, which every tokio task
/// and socket registration is, cost their size class and no more.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Exit code for an invalid configuration (clap uses 2 for bad usage).
const EXIT_CONFIG: u8 = 3;
/// Exit code for a failure while starting or running.
const EXIT_RUNTIME: u8 = 1;

#[derive(Parser)]
#[command(
    name = "mse-proxy",
    version,
    about = "SNI-routing TLS ingress for SGX enclave apps"
)]
struct Cli {
    /// Static configuration file (TOML).
    #[arg(long, short, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

// Parsed once per process: the size of the `App` variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Validate the config and its routes, print every problem, exit non-zero if any.
    Check,
    /// Run the proxy (the default when no command is given).
    Run,
    /// Run the proxy on the shipped example config with a stand-in enclave
    /// behind it, and show one TLS connection routed through it.
    Demo {
        /// Where the stand-in enclave listens (the example routes point here).
        #[arg(long, default_value = "127.0.0.1:9443")]
        enclave: std::net::SocketAddr,
    },
    /// App records: what the proxy makes of an app's configuration.
    App {
        #[command(subcommand)]
        command: AppCommand,
    },
    /// Hand the running proxy (of --config) over to a new binary without
    /// refusing or breaking a connection: the listeners and every
    /// passthrough connection move to it; terminate connections drain.
    Upgrade {
        /// The new binary (default: the running one's executable path).
        #[arg(long, value_name = "PATH")]
        binary: Option<PathBuf>,
        /// How long to wait for the new process to serve.
        #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
        wait: std::time::Duration,
    },
    /// The durable state (state_dir) as JSON: backups, moves, upgrades.
    State {
        #[command(subcommand)]
        command: StateCommand,
    },
}

#[derive(Subcommand)]
enum StateCommand {
    /// Write the stored routes and apps as JSON (the API's schema). The
    /// proxy using the state_dir must be stopped.
    Export(mse_proxy::state_cmd::ExportArgs),
    /// Check a JSON export like the API checks writes, then write it all
    /// into the state_dir in one transaction, or nothing. Merges by
    /// default; --replace makes it the whole state. The proxy using the
    /// state_dir must be stopped.
    Import(mse_proxy::state_cmd::ImportArgs),
}

#[derive(Subcommand)]
enum AppCommand {
    /// Read an app configuration file (mse.toml), apply the platform's rules
    /// (with the [apps] policy of --config, if given) and print the app
    /// record and its routes as JSON, or every violation; --apply registers
    /// it with a running proxy.
    Plan(mse_proxy::apps::plan::PlanArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    mse_proxy::tls::install_default_provider();
    if let Some(Command::App {
        command: AppCommand::Plan(args),
    }) = &cli.command
    {
        let code = mse_proxy::apps::plan::run(
            args,
            cli.config.as_deref(),
            &mut std::io::stdout(),
            &mut std::io::stderr(),
        );
        return ExitCode::from(code);
    }
    if let Some(Command::State { command }) = &cli.command {
        let Some(config) = cli.config.as_deref() else {
            eprintln!("error: --config FILE is required");
            return ExitCode::from(2);
        };
        let err = &mut std::io::stderr();
        return ExitCode::from(match command {
            StateCommand::Export(args) => mse_proxy::state_cmd::export(config, args, err),
            StateCommand::Import(args) => mse_proxy::state_cmd::import(config, args, err),
        });
    }
    if let Some(Command::Upgrade { binary, wait }) = &cli.command {
        let Some(path) = cli.config.as_deref() else {
            eprintln!("error: --config FILE is required");
            return ExitCode::from(2);
        };
        let config = match Config::load(path) {
            Ok(c) => c,
            Err(errs) => {
                eprintln!("{errs}");
                return ExitCode::from(EXIT_CONFIG);
            }
        };
        let Some(socket) = config.upgrade_socket else {
            eprintln!("error: the config names no upgrade socket");
            return ExitCode::from(EXIT_CONFIG);
        };
        let code = upgrade::trigger::run(&socket, binary.as_deref(), *wait, &mut std::io::stdout());
        return ExitCode::from(code);
    }
    let command = cli.command.unwrap_or(Command::Run);
    let config_path = match (&cli.config, &command) {
        (Some(p), _) => p.clone(),
        (None, Command::Demo { .. }) => PathBuf::from("config/example.toml"),
        (None, _) => {
            eprintln!("error: --config FILE is required");
            return ExitCode::from(2);
        }
    };

    // The demo keeps its state in memory: it makes no state directory.
    let checked = match command {
        Command::Demo { .. } => server::check_in_memory(&config_path),
        _ => server::check(&config_path),
    };
    let (config, routes) = match checked {
        Ok(ok) => ok,
        Err(errs) => {
            eprintln!("{errs}");
            eprintln!("{} problem(s) in the configuration", errs.0.len());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Command::Check = command {
        for f in server::shared_certificates(&config, &routes) {
            let level = if f.opted_in { "warning" } else { "note" };
            println!("{level}: {f}");
        }
        println!(
            "{}: ok ({} listener(s), {} route(s))",
            config_path.display(),
            config.listeners.len(),
            routes.len()
        );
        return ExitCode::SUCCESS;
    }

    init_tracing(&config);
    // The control plane's runtime: the reconciler, the admin API, the
    // sources. Connections run on the data plane's own workers
    // (`proxy::workers`), `workers` of them, so two threads are plenty here.
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    rt.worker_threads(2);
    rt.thread_name("mse-control");
    let rt = match rt.build() {
        Ok(rt) => rt,
        Err(e) => {
            say_error(format_args!("cannot start the runtime: {e}"));
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let result = rt.block_on(async move {
        match command {
            Command::Demo { enclave } => mse_proxy::demo::run(config, routes, enclave).await,
            _ => {
                let signals = server::Signals::register()?;
                // Started by an upgrade: the listeners come from the
                // running process (which released the state store first).
                let mut inherited = match upgrade::successor::socket() {
                    Some(p) => Some(
                        tokio::task::spawn_blocking(move || upgrade::successor::join(&p))
                            .await??,
                    ),
                    None => None,
                };
                let socket = config.upgrade_socket.clone();
                let handle = server::start_with(config, routes, inherited.as_mut())?;
                if let Some(inherited) = inherited {
                    // Ready as `/readyz` means it: the stored state restored.
                    let ready = &handle.control.stats.ready;
                    let until = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
                    while !ready.load(std::sync::atomic::Ordering::Relaxed) {
                        anyhow::ensure!(tokio::time::Instant::now() < until, "upgrade: not ready in 60s");
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    }
                    inherited.ready(
                        std::sync::Arc::clone(&handle.shared),
                        handle.tracker(),
                        handle.workers(),
                    )?;
                }
                // Bound once serving: the path names this process from now on.
                let upgrader = socket.and_then(|p| match upgrade::old::Upgrader::bind(&p) {
                    Ok(u) => Some(u),
                    Err(e) => {
                        tracing::warn!(socket = %p.display(), error = %e, "no upgrade socket: upgrades are off");
                        None
                    }
                });
                server::serve_upgradable(handle, signals, upgrader).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            say_error(format_args!("{e:#}"));
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// Whether to colour a log going to a terminal or not (`is_terminal`),
/// under the NO_COLOR convention (set and not empty: no colour).
fn colour(is_terminal: bool) -> bool {
    is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn init_tracing(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    // A log destination that breaks (a closed pipe) must not break serving:
    // tracing's own error report goes through eprintln!, which panics when
    // stderr itself is gone, and would take the connection's task with it.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal: escapes in a file, a pipe
        // or journald make the log hard to read and grep. NO_COLOR too.
        .with_ansi(colour(std::io::stderr().is_terminal()))
        .log_internal_errors(false);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Prints `error: {msg}` on stderr in one write. `eprintln!` writes each
/// piece of its format on its own (stderr is unbuffered), and the process
/// shares stderr with the one it upgrades from or to: pieces would
/// interleave with that process's log lines and break them.
fn say_error(msg: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let line = format!("error: {msg}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
}
