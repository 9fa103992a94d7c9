//! The `pipepay` command line. Every failure before serving is reported as one line naming the
//! setting at fault, with a non-zero exit, never a panic.

use std::process::ExitCode;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory, Parser, Subcommand};

use crate::app::Application;
use crate::config::Config;
use crate::store::Db;
use crate::vault::{self, MasterKeys, Vault};
use crate::{shutdown, telemetry};

/// pipepay turns Kommo deals into Flutterwave payment links and payments into won deals.
///
/// Every setting below can also be given as the environment variable shown with it.
#[derive(Debug, Parser)]
#[command(name = "pipepay", version, about, long_about)]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Apply migrations, then serve HTTP until SIGINT or SIGTERM (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Manage the vault's master keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Ask the pipepay serving on PIPEPAY_LISTEN whether it is up (`/healthz`, or `/readyz` with
    /// --ready) and exit 0 if so: a container health check with no curl in the image.
    Healthcheck {
        /// Check readiness (database reachable, migrations applied) instead of liveness.
        #[arg(long)]
        ready: bool,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum KeysCommand {
    /// Re-wrap every client account's data key under the first of PIPEPAY_MASTER_KEYS. Safe while
    /// pipepay serves (run them with the same keys) and safe to re-run; prints counts.
    Rotate,
    /// Print a new random master key entry (`id:base64`) for PIPEPAY_MASTER_KEYS.
    Generate {
        /// The new key's id; defaults to today's date.
        #[arg(long)]
        id: Option<String>,
    },
}

pub fn run() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return report_usage_error(error),
    };
    let telemetry = match telemetry::init(cli.config.log_format, &cli.config.log_filter) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("pipepay: telemetry: {}", crate::error_chain(error.as_ref()));
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("pipepay: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(execute(cli));
    // Outside the runtime: the exporters' blocking HTTP clients must not run inside it.
    drop(runtime);
    telemetry.shutdown();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("pipepay: {}", crate::error_chain(error.as_ref()));
            ExitCode::FAILURE
        }
    }
}

async fn execute(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            // Listen for signals before the slow part of start-up so none is missed.
            let stop = shutdown::signal();
            Application::build(cli.config).await?.run_until(stop).await
        }
        Command::Migrate => {
            use anyhow::Context;
            let db = Db::connect(&cli.config.database_url, 1).await.context("PIPEPAY_DATABASE_URL")?;
            db.migrate().await.context("PIPEPAY_DATABASE_URL")?;
            tracing::info!(database = %cli.config.database_url, "migrations applied");
            db.close().await;
            Ok(())
        }
        Command::Keys(KeysCommand::Generate { id }) => {
            let id = id.unwrap_or_else(|| format!("k{}", chrono::Utc::now().format("%Y%m%d")));
            // Validate the id by parsing the entry we are about to print.
            let entry = MasterKeys::generate_entry(&id);
            entry.parse::<MasterKeys>().map_err(|e| anyhow::anyhow!("--id: {e}"))?;
            println!("{entry}");
            Ok(())
        }
        Command::Healthcheck { ready } => healthcheck(cli.config.listen, ready).await,
        Command::Keys(KeysCommand::Rotate) => {
            use anyhow::Context;
            let keys = cli.config.resolve_master_keys().map_err(anyhow::Error::msg)?;
            let db = Db::connect(&cli.config.database_url, 2).await.context("PIPEPAY_DATABASE_URL")?;
            let active = keys.active().id.clone();
            let vault = Vault::new(keys);
            let report = vault::rotate(&db, &vault).await.context("rotating data keys")?;
            let (agencies_moved, agencies_current) =
                crate::tenants::telemetry::reseal(&db, &vault).await.map_err(|e| {
                    anyhow::anyhow!("re-sealing agencies' telemetry headers: {}", crate::error_chain(&e))
                })?;
            db.close().await;
            println!(
                "re-sealed {agencies_moved} agencies' telemetry headers; {agencies_current} were current"
            );
            println!(
                "rewrapped {} data keys under master key {active}; {} were under it already; {} failed",
                report.rewrapped, report.current, report.failed
            );
            if report.failed > 0 {
                anyhow::bail!(
                    "PIPEPAY_MASTER_KEYS: {} data keys are wrapped by master keys that are not configured ({}); \
                     add them after the new key and run again",
                    report.failed,
                    report.missing_master_keys.join(", ")
                );
            }
            Ok(())
        }
    }
}

/// GETs the health endpoint of the pipepay listening on `listen` (an unspecified address such as
/// 0.0.0.0 is reached on loopback), failing on anything but 200 within two seconds.
async fn healthcheck(listen: std::net::SocketAddr, ready: bool) -> anyhow::Result<()> {
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let url = format!("http://{addr}/{}", if ready { "readyz" } else { "healthz" });
    crate::install_tls_provider();
    let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(2)).build()?;
    let status = client.get(&url).send().await.map_err(|e| anyhow::anyhow!("{url}: {e}"))?.status();
    if !status.is_success() {
        anyhow::bail!("{url} answered {status}");
    }
    println!("{url}: {status}");
    Ok(())
}

/// Prints clap's verdict as one line that names both the flag and its environment variable.
fn report_usage_error(error: clap::Error) -> ExitCode {
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        // Help and version go to stdout with a zero exit, as clap intends.
        let _ = error.print();
        return ExitCode::SUCCESS;
    }
    eprintln!("pipepay: {}", usage_error_line(&error));
    ExitCode::from(2)
}

fn usage_error_line(error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    let first_line =
        rendered.lines().next().unwrap_or("invalid command line").trim_start_matches("error: ").to_owned();
    if !matches!(error.kind(), ErrorKind::InvalidValue | ErrorKind::ValueValidation) {
        return first_line;
    }
    let Some(ContextValue::String(flag)) = error.get(ContextKind::InvalidArg) else {
        return first_line;
    };
    let command = Cli::command();
    let Some(arg) = command.get_arguments().find(|a| {
        a.get_long().is_some_and(|long| {
            flag.strip_prefix("--")
                .and_then(|rest| rest.strip_prefix(long))
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(' ') || rest.starts_with('='))
        })
    }) else {
        return first_line;
    };
    let long = arg.get_long().unwrap_or_default();
    let name = match arg.get_env() {
        Some(env) => format!("{} (--{long})", env.to_string_lossy()),
        None => format!("--{long}"),
    };
    // Settings that hide their values (the database URL can hold a password) are not quoted.
    let value = match error.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(v)) if !arg.is_hide_env_values_set() => format!(" {v:?}"),
        _ => String::new(),
    };
    let reason = match (std::error::Error::source(error), error.get(ContextKind::ValidValue)) {
        (Some(source), _) => source.to_string(),
        (None, Some(ContextValue::Strings(valid))) => format!("expected one of: {}", valid.join(", ")),
        (None, _) => "invalid value".to_owned(),
    };
    format!("invalid {name}{value}: {reason}")
}
