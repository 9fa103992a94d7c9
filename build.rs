//! Decides at build time which optional test halves can run here, so `cargo test` reports a
//! PostgreSQL or browser test it could not run as ignored rather than as passed. libtest has
//! no way to mark a test ignored at run time; a cfg read by `#[cfg_attr(..., ignore)]` does.

use std::path::Path;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(pg_tests)");
    println!("cargo::rustc-check-cfg=cfg(browser_tests)");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=PIPEPAY_TEST_DATABASE_URL");
    println!("cargo::rerun-if-env-changed=PIPEPAY_REQUIRE_BROWSER");
    if std::env::var("PIPEPAY_TEST_DATABASE_URL").is_ok_and(|v| !v.is_empty()) {
        println!("cargo::rustc-cfg=pg_tests");
    }
    // Installing or removing Chromium changes /usr/bin; watching it (not PATH, which differs
    // between shells) re-decides without rebuilding on every change of terminal.
    if Path::new("/usr/bin").is_dir() {
        println!("cargo::rerun-if-changed=/usr/bin");
    }
    // Required, the stories compile in and fail loudly when Chromium is missing.
    let required = std::env::var("PIPEPAY_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
    if required || browser_installed() {
        println!("cargo::rustc-cfg=browser_tests");
    }
}

/// Debian's `chromedriver` on PATH and Chromium where the browser stories look for it.
fn browser_installed() -> bool {
    let on_path = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("chromedriver").is_file()));
    on_path && Path::new("/usr/bin/chromium").exists()
}
