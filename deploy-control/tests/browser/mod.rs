//! A real headless Chromium driven over WebDriver: Debian's `chromedriver` (installed with
//! `chromium` by `scripts/ensure-browser.sh`, so both are the same version) and the
//! `fantoccini` client. Each [`Browser`] has its own driver process and profile.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// How long a step may take before the test fails (the page reacts in milliseconds; the
/// bound only keeps a broken page from hanging the suite).
const STEP: Duration = Duration::from_secs(20);

/// Browsers open at once: each Chromium wants a core while it starts, and a starved one takes
/// long enough for a test's short TTLs to run out.
static OPEN: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// A browser session; the driver process ends when it is dropped.
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
    _slot: tokio::sync::SemaphorePermit<'static>,
}

impl Browser {
    /// Starts `chromedriver` on a free port and opens a headless Chromium `width`×`height`.
    pub async fn start(width: u32, height: u32) -> Self {
        let slot = OPEN.acquire().await.expect("the semaphore is never closed");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is missing: run scripts/ensure-browser.sh");
        let profile = tempfile::tempdir().expect("profile dir");
        let mut options = json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--no-first-run", "--disable-background-networking", "--disable-sync",
                    "--disable-component-update",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.path().display()),
                ]
        });
        if width < 500 {
            // Below Chromium's smallest window, a phone is emulated (its viewport and touch).
            options["mobileEmulation"] = json!({
                "deviceMetrics": { "width": width, "height": height, "pixelRatio": 1.0, "touch": true }
            });
        }
        let mut caps = serde_json::Map::new();
        caps.insert("goog:chromeOptions".into(), options);
        let url = format!("http://127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + STEP;
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(e) if tokio::time::Instant::now() > deadline => {
                    panic!("no WebDriver session from chromedriver: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        Self {
            client,
            driver,
            _profile: profile,
            _slot: slot,
        }
    }

    /// Opens `url` and waits until the page's script has run.
    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("navigate");
        self.wait_until("document.readyState === 'complete'").await;
    }

    /// Evaluates `expr` in the page.
    pub async fn eval(&self, expr: &str) -> Value {
        self.client
            .execute(&format!("return ({expr});"), vec![])
            .await
            .unwrap_or_else(|e| panic!("evaluating {expr}: {e}"))
    }

    /// Waits until `expr` is truthy in the page; fails the test after [`STEP`].
    pub async fn wait_until(&self, expr: &str) {
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            let ok = self
                .client
                .execute(&format!("return !!({expr});"), vec![])
                .await
                .map(|v| v == Value::Bool(true))
                .unwrap_or(false);
            if ok {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                let body = self.eval("document.body.innerText").await;
                panic!("the page never got to `{expr}`; it shows:\n{body}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks the element `css` selects, once it is there (the page re-draws lists as they
    /// change, so a click on a replaced element is tried again).
    pub async fn click(&self, css: &str) {
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            let clicked = match self.client.find(Locator::Css(css)).await {
                Ok(element) => element.click().await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match clicked {
                Ok(()) => return,
                Err(e) if tokio::time::Instant::now() > deadline => {
                    panic!("could not click {css}: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Types `text` into the field `css` selects, as a user would.
    pub async fn type_into(&self, css: &str, text: &str) {
        self.wait_until(&format!("document.querySelector({css:?})"))
            .await;
        let field = self.client.find(Locator::Css(css)).await.expect("field");
        field.clear().await.expect("clear field");
        field.send_keys(text).await.expect("type");
    }

    /// Presses `key` in the element that has the keyboard focus.
    pub async fn press(&self, key: fantoccini::key::Key) {
        let focused = self
            .client
            .active_element()
            .await
            .expect("a focused element");
        focused
            .send_keys(&key.to_string())
            .await
            .expect("key press");
    }

    /// Saves a PNG of the window as `target/dashboard-screenshots/NAME.png`.
    pub async fn screenshot(&self, name: &str) {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/dashboard-screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        let png = self.client.screenshot().await.expect("screenshot");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("write screenshot");
    }

    /// Ends the session and the driver.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A failed test never reaches `close`: still end the driver (and its Chromium).
        let _ = self.driver.kill();
    }
}
