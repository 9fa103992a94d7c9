//! A real Chromium, driven through WebDriver (Debian's `chromium` and `chromium-driver`).
//! Each story gets its own chromedriver and browser. A story that fails leaves a screenshot
//! (a file, and the same PNG as a data URL in the test output, for CI logs) and the page's URL.

use std::future::Future;
use std::net::TcpStream;
use std::panic::AssertUnwindSafe;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::FutureExt;
use serde_json::json;

use crate::support::agent::PASSWORD;

const DRIVER: &str = "chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
const WAIT: Duration = Duration::from_secs(20);

/// The chromedriver process; killed when the story ends.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn available() -> bool {
    Command::new(DRIVER)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
        && std::path::Path::new(CHROMIUM).exists()
}

/// A browser tab, with helpers that wait for the page like a person would.
#[derive(Clone)]
pub struct Browser {
    pub client: Client,
}

/// Runs `story` in a fresh headless Chromium. Stories are compiled in only where Chromium was
/// found at build time or `PIPEPAY_REQUIRE_BROWSER=1` (CI) asks for them (`build.rs` sets
/// `browser_tests`; mark each story `#[cfg_attr(not(browser_tests), ignore = ...)]`), so a
/// story that runs without Chromium fails rather than passing unrun.
pub async fn story<F, Fut>(name: &str, story: F)
where
    F: FnOnce(Browser) -> Fut,
    Fut: Future<Output = ()>,
{
    assert!(
        available(),
        "browser story {name:?} needs {DRIVER} and {CHROMIUM} (Debian's chromium-driver and chromium)"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(DRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let _driver = Driver(child);
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < WAIT, "chromedriver did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1280,1000", "--no-first-run", "--disable-extensions"]
        }
    });
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let client = ClientBuilder::new(connector)
        .capabilities(capabilities.as_object().unwrap().clone())
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a Chromium session");
    let browser = Browser { client: client.clone() };
    let outcome = AssertUnwindSafe(story(browser)).catch_unwind().await;
    if let Err(panic) = outcome {
        leave_screenshot(&client, name).await;
        let _ = client.close().await;
        std::panic::resume_unwind(panic);
    }
    let _ = client.close().await;
}

/// Saves what the browser shows under `$CARGO_TARGET_DIR/tmp/browser-failures/` and prints it.
async fn leave_screenshot(client: &Client, name: &str) {
    let url = client.current_url().await.map(|u| u.to_string()).unwrap_or_default();
    match client.screenshot().await {
        Ok(png) => {
            let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-failures");
            let _ = std::fs::create_dir_all(&dir);
            let file = dir.join(format!("{name}.png"));
            let _ = std::fs::write(&file, &png);
            eprintln!("\n#### browser story {name:?} failed at {url}");
            eprintln!("#### screenshot: {}", file.display());
            eprintln!(
                "#### data:image/png;base64,{}\n",
                base64::engine::general_purpose::STANDARD.encode(&png)
            );
        }
        Err(error) => eprintln!("#### browser story {name:?} failed at {url}; no screenshot: {error}"),
    }
    if let Ok(source) = client.source().await {
        let text: String = source.chars().take(4000).collect();
        eprintln!("#### page source (start):\n{text}\n");
    }
}

impl Browser {
    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    pub async fn url(&self) -> String {
        self.client.current_url().await.unwrap().to_string()
    }

    /// The element matching `css`, once it is on the page.
    pub async fn find(&self, css: &str) -> Element {
        match self.client.wait().at_most(WAIT).for_element(Locator::Css(css)).await {
            Ok(element) => element,
            Err(error) => panic!("no {css} on {}: {error}", self.url().await),
        }
    }

    /// Types into a field, replacing what was there (as a person would: focus, select, type).
    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    pub async fn click(&self, css: &str) {
        self.find(css).await.click().await.unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Clicks the button or link whose text is `label`.
    pub async fn press(&self, label: &str) {
        let xpath = format!("//button[normalize-space()='{label}'] | //a[normalize-space()='{label}']");
        let found = self.client.wait().at_most(WAIT).for_element(Locator::XPath(&xpath)).await;
        found.unwrap_or_else(|e| panic!("no button or link {label:?}: {e}")).click().await.unwrap();
    }

    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap()
    }

    /// The whole page's visible text.
    pub async fn page_text(&self) -> String {
        self.text("body").await
    }

    /// Waits until the browser has arrived at `path`. A click on a form's button may return
    /// before the navigation it starts has finished; going elsewhere before then races it.
    pub async fn wait_for_path(&self, path: &str) {
        let started = Instant::now();
        loop {
            let url = self.url().await;
            if url::Url::parse(&url).is_ok_and(|u| u.path() == path) {
                return;
            }
            assert!(started.elapsed() < WAIT, "never arrived at {path}; still on {url}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Signs a new agency up through the form, arriving at its (empty) client list.
    pub async fn sign_up(&self, base: &str, agency: &str, email: &str) {
        self.goto(&format!("{base}/signup")).await;
        self.fill("#agency_name", agency).await;
        self.fill("#email", email).await;
        self.fill("#password", PASSWORD).await;
        self.press("Create account").await;
        self.wait_for_text("Client accounts", false).await;
    }

    /// Logs in through the form, arriving at the client list.
    pub async fn log_in(&self, base: &str, email: &str, password: &str) {
        self.goto(&format!("{base}/login")).await;
        self.fill("#email", email).await;
        self.fill("#password", password).await;
        self.press("Log in").await;
        self.wait_for_text("Client accounts", false).await;
    }

    /// Waits until the page's text contains `what` (reloading, as a person would, if asked).
    pub async fn wait_for_text(&self, what: &str, reload: bool) {
        self.wait_for_text_in("body", what, reload).await;
    }

    /// Waits until the element matching `css` (present once the page is) contains `what`.
    pub async fn wait_for_text_in(&self, css: &str, what: &str, reload: bool) {
        let started = Instant::now();
        loop {
            let found = match self.client.find(Locator::Css(css)).await {
                Ok(element) => element.text().await.unwrap_or_default().contains(what),
                Err(_) => false,
            };
            if found {
                return;
            }
            assert!(started.elapsed() < WAIT, "{what:?} never appeared on {}", self.url().await);
            tokio::time::sleep(Duration::from_millis(250)).await;
            if reload {
                self.client.refresh().await.unwrap();
            }
        }
    }
}
