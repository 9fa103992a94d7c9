//! The binary as an operator meets it: a fresh machine, bad settings, `--help`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use clap::CommandFactory;
use pipepay::cli::Cli;

use crate::support::{Engine, TestDb};

const BIN: &str = env!("CARGO_BIN_EXE_pipepay");

fn pipepay(dir: &Path, env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(BIN);
    command.current_dir(dir).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    for (key, value) in env {
        command.env(key, value);
    }
    command
}

/// A started pipepay process; killed if a test fails before stopping it.
struct Running(Option<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts the binary and waits for its "ready" log line, returning the process and its address.
fn start(dir: &Path, env: &[(&str, &str)]) -> (Running, String) {
    let mut env = env.to_vec();
    env.extend([("PIPEPAY_LISTEN", "127.0.0.1:0"), ("PIPEPAY_LOG_FORMAT", "json")]);
    let mut child = pipepay(dir, &env).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let running = Running(Some(child));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    loop {
        let line = rx.recv_timeout(Duration::from_secs(30)).expect("pipepay logs that it is ready");
        let log: serde_json::Value = serde_json::from_str(&line).expect("JSON logs are JSON");
        if log["message"] == "pipepay ready" {
            return (running, log["listen"].as_str().unwrap().to_owned());
        }
    }
}

fn terminate(mut running: Running) {
    let mut child = running.0.take().unwrap();
    // SAFETY: kill(2) on a pid we spawned and have not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "a SIGTERM stop is a clean exit, got {status}");
}

#[tokio::test]
async fn the_run_command_works_on_a_fresh_machine_with_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let (child, addr) = start(dir.path(), &[]);
    let ready = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    assert!(dir.path().join("data/pipepay.db").is_file(), "the default database is created");
    terminate(child);
}

#[tokio::test]
async fn the_same_binary_serves_on_postgres() {
    if !Engine::postgres_enabled() {
        return;
    }
    let db = TestDb::new(Engine::Postgres).await;
    let dir = tempfile::tempdir().unwrap();
    let (child, addr) = start(dir.path(), &[("PIPEPAY_DATABASE_URL", &db.url)]);
    let ready: serde_json::Value =
        reqwest::get(format!("http://{addr}/readyz")).await.unwrap().json().await.unwrap();
    assert_eq!(ready["database"], "postgres");
    assert!(!dir.path().join("data").exists(), "nothing written locally on PostgreSQL");
    terminate(child);
}

#[test]
fn the_defaults_are_the_documented_ones() {
    let command = Cli::command();
    let default = |id: &str| {
        let arg = command.get_arguments().find(|a| a.get_id() == id).unwrap();
        arg.get_default_values()[0].to_string_lossy().into_owned()
    };
    assert_eq!(default("listen"), "127.0.0.1:8080");
    assert_eq!(default("database_url"), "sqlite://data/pipepay.db");
}

#[test]
fn help_documents_every_setting_with_its_variable() {
    let dir = tempfile::tempdir().unwrap();
    let output = pipepay(dir.path(), &[]).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for arg in Cli::command().get_arguments() {
        if let Some(env) = arg.get_env() {
            let env = env.to_string_lossy();
            assert!(env.starts_with("PIPEPAY_"), "{env}");
            assert!(help.contains(&*env), "--help is missing {env}");
        }
    }
    for subcommand in ["serve", "migrate"] {
        assert!(help.contains(subcommand), "--help is missing {subcommand}");
    }
}

#[test]
fn bad_settings_exit_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str, &[&str])] = &[
        ("PIPEPAY_DATABASE_URL", "mysql://root@127.0.0.1/pipepay", &["sqlite://", "postgres://"]),
        ("PIPEPAY_DATABASE_URL", "postgres://pipepay:hunter2@127.0.0.1:1/pipepay", &["refused"]),
        ("PIPEPAY_LISTEN", "localhost-8080", &["socket address"]),
        ("PIPEPAY_PUBLIC_URL", "ftp://pay.example.com", &["http"]),
        ("PIPEPAY_LOG_FORMAT", "xml", &["human", "json"]),
        ("PIPEPAY_BODY_LIMIT", "lots", &["invalid"]),
    ];
    for (setting, value, hints) in cases {
        let output = pipepay(dir.path(), &[(setting, value)]).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(!output.status.success(), "{setting}={value} must fail");
        assert_eq!(lines.len(), 1, "{setting}={value}: one line, got {stderr:?}");
        assert!(lines[0].contains(setting), "{setting}={value}: names the setting: {stderr}");
        for hint in *hints {
            assert!(lines[0].contains(hint), "{setting}={value}: says {hint:?}: {stderr}");
        }
        assert!(!stderr.contains("panicked") && !stderr.contains("hunter2"), "{stderr}");
    }
    assert!(!dir.path().join("data").exists(), "nothing is created when settings are bad");
}

#[test]
fn migrate_applies_migrations_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let status = pipepay(dir.path(), &[]).arg("migrate").status().unwrap();
    assert!(status.success());
    assert!(dir.path().join("data/pipepay.db").is_file());
}
