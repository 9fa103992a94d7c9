//! `pipepay-widget pack`: checks the Kommo Marketplace widget and packs it for upload. A release
//! tool, kept out of the server so the server does not carry a zip writer it never uses.

mod pack;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use url::Url;

#[derive(Debug, Parser)]
#[command(name = "pipepay-widget", about = "The widget archive Kommo needs to list the integration.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check the widget against Kommo's rules and pack it into a zip for upload, with this
    /// deployment's PIPEPAY_PUBLIC_URL written into its links.
    Pack {
        /// The https:// address Kommo users reach pipepay at.
        #[arg(long, env = "PIPEPAY_PUBLIC_URL")]
        public_url: Option<Url>,
        /// The widget's source folder.
        #[arg(long, default_value = "frontend/kommo-widget")]
        source: PathBuf,
        /// Where to write the archive.
        #[arg(long, default_value = "pipepay-widget.zip")]
        out: PathBuf,
        /// The support address shown in the widget (Kommo requires a working one).
        #[arg(long)]
        support_email: String,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("pipepay-widget: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let Command::Pack { public_url, source, out, support_email } = cli.command;
    let public_url = public_url.filter(|u| u.scheme() == "https").ok_or_else(|| {
        anyhow::anyhow!("PIPEPAY_PUBLIC_URL: set it to the https:// address Kommo users reach pipepay at")
    })?;
    if !support_email.contains('@') {
        anyhow::bail!("--support-email: {support_email:?} is not an email address");
    }
    let report = pack::pack_for(&source, &out, public_url.as_str(), &support_email)
        .map_err(|e| anyhow::anyhow!("{}: {e}", e.file()))?;
    println!("packed {} files ({} bytes) into {}", report.files.len(), report.bytes, out.display());
    Ok(())
}
