//! The real binary as a child process, for what only a process shows: start-up, signals, logs.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_pipepay");

/// The binary with a clean environment (no inherited PIPEPAY_* settings) in `dir`.
pub fn pipepay(dir: &Path, env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(BIN);
    command.current_dir(dir).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    for (key, value) in env {
        command.env(key, value);
    }
    command
}

/// A started pipepay; killed if a test fails before stopping it. Everything it writes to
/// stdout and stderr is kept.
pub struct Running {
    child: Option<Child>,
    pub addr: String,
    output: Arc<Mutex<String>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Running {
    /// Starts the binary with JSON logs on port 0 and waits for its "ready" line.
    pub fn start(dir: &Path, env: &[(&str, &str)]) -> Running {
        Self::start_at(dir, env, "127.0.0.1:0")
    }

    /// Starts the binary listening on `listen`.
    pub fn start_at(dir: &Path, env: &[(&str, &str)], listen: &str) -> Running {
        // The tests that start the binary ask it over HTTP with clients of their own.
        pipepay::install_tls_provider();
        let mut env = env.to_vec();
        env.extend([("PIPEPAY_LISTEN", listen), ("PIPEPAY_LOG_FORMAT", "json")]);
        let mut child = pipepay(dir, &env).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let output = Arc::new(Mutex::new(String::new()));
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let kept = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                kept.lock().unwrap().push_str(&line);
                kept.lock().unwrap().push('\n');
                let _ = tx.send(line);
            }
        });
        let kept = output.clone();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            kept.lock().unwrap().push_str(&text);
        });
        let mut running = Running { child: Some(child), addr: String::new(), output };
        loop {
            let line = match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(line) => line,
                Err(_) => panic!("pipepay never became ready; it said:\n{}", running.output()),
            };
            let log: serde_json::Value = serde_json::from_str(&line).expect("JSON logs are JSON");
            if log["message"] == "pipepay ready" {
                running.addr = log["listen"].as_str().unwrap().to_owned();
                return running;
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Everything the process has written so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// SIGKILL: the process dies wherever it is, as in a crash or an OOM kill.
    pub fn crash(mut self) -> String {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.output()
    }

    /// SIGTERM, then the exit must be clean. Returns everything it wrote.
    pub fn terminate(mut self) -> String {
        let mut child = self.child.take().unwrap();
        // SAFETY: kill(2) on a child we spawned and have not reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = child.wait().unwrap();
        assert!(status.success(), "a SIGTERM stop is a clean exit, got {status}");
        std::thread::sleep(Duration::from_millis(100));
        self.output()
    }
}
