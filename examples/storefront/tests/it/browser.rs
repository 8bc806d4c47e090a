//! `/admin/caches` in a real browser: headless Chromium (Debian's `chromium` package,
//! which `scripts/test.sh` installs) loads the page; the figures the JSON endpoint
//! reports must be in the rendered DOM, and a screenshot must come out.
//!
//! Without `/usr/bin/chromium` (or `$CHROMIUM`) the test fails under `CI=true` and
//! otherwise prints a loud `SKIPPED (chromium): ...` line and passes.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use http::StatusCode;
use storefront::Config;
use support::{cache, start};

/// The browser binary, or why there is none.
fn chromium() -> Result<PathBuf, String> {
    let path = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found: install Debian's `chromium` package (`apt-get install -y chromium`; scripts/test.sh does) or set CHROMIUM",
            path.display()
        ))
    }
}

fn chromium_or_skip() -> Option<PathBuf> {
    match chromium() {
        Ok(path) => Some(path),
        Err(reason) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("chromium is required under CI=true: {reason}")
        }
        Err(reason) => {
            eprintln!("SKIPPED (chromium): {reason}");
            None
        }
    }
}

/// Runs headless Chromium on `url` with `args`, in a fresh profile directory, and
/// returns its stdout. Bounded: killed after 60 s.
async fn run_chromium(browser: &Path, profile: &Path, args: &[String], url: &str) -> String {
    let mut command = tokio::process::Command::new(browser);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("chromium finished within 60 s")
        .expect("chromium runs");
    assert!(
        output.status.success(),
        "chromium failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_page_shows_every_cache_figure_in_a_real_browser() {
    let Some(browser) = chromium_or_skip() else {
        return;
    };
    let shop = start(Config::default()).await;
    assert_eq!(shop.get("/products/42").await.x_cache(), "MISS");
    shop.wait_for_stored_pages(1).await;
    for path in ["/products/42", "/", "/", "/search?q=pen"] {
        assert_eq!(shop.get(path).await.status, StatusCode::OK, "{path}");
    }
    // Loading the dashboard reads no cache entry, so these figures stay put while the
    // browser loads it.
    let dashboard = shop.dashboard().await;
    let profile = tempfile::tempdir().expect("a fresh profile dir");
    let url = shop.url("/admin/caches");
    let dom = run_chromium(&browser, profile.path(), &["--dump-dom".into()], &url).await;

    assert!(dom.contains("<h1>Caches</h1>"), "not the dashboard:\n{dom}");
    assert!(dom.contains("<code id=\"store\">memory://</code>"));
    for c in &dashboard.caches {
        // As the DOM writes it: ORM result caches are named after types (`Vec<i32>`).
        let name = c
            .name
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        let row_start = dom
            .find(&format!("<tr data-cache=\"{name}\">"))
            .unwrap_or_else(|| panic!("no row for `{}` in the DOM:\n{dom}", c.name));
        let row = &dom[row_start..row_start + dom[row_start..].find("</tr>").unwrap()];
        for (field, value) in [
            ("hits", c.hits.to_string()),
            ("misses", c.misses.to_string()),
            (
                "entries",
                c.entries.map(|e| e.to_string()).unwrap_or("?".into()),
            ),
            ("evictions", c.evictions.to_string()),
            ("puts", c.puts.to_string()),
        ] {
            let cell = format!("<td data-field=\"{field}\">{value}</td>");
            assert!(
                row.contains(&cell),
                "`{}`: expected {cell} in {row}",
                c.name
            );
        }
        assert!(row.contains("data-field=\"hit_ratio\">"), "{row}");
        assert!(row.contains("data-field=\"avg_get\">"), "{row}");
    }
    let http = cache(&dashboard, "http");
    assert!(http.hits >= 1 && http.entries == Some(1), "{http:?}");
    assert!(dom.contains(&format!(
        "<td data-field=\"http_hits\">{}</td>",
        dashboard.http.hits
    )));
    assert!(dom.contains(&format!(
        "<td data-field=\"orm_hits\">{}</td>",
        dashboard.orm.hits
    )));

    // The screenshot the README documents.
    let png = profile.path().join("admin-caches.png");
    run_chromium(
        &browser,
        profile.path(),
        &[
            format!("--screenshot={}", png.display()),
            "--window-size=1280,900".into(),
        ],
        &url,
    )
    .await;
    let bytes = std::fs::read(&png).expect("chromium wrote the screenshot");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    assert!(
        bytes.len() > 10_000,
        "a page, not a blank: {} bytes",
        bytes.len()
    );
    if let Some(dir) = std::env::var_os("STOREFRONT_SCREENSHOT_DIR") {
        let target = Path::new(&dir).join("admin-caches.png");
        std::fs::copy(&png, &target).expect("copy the screenshot");
        eprintln!("screenshot: {}", target.display());
    }
}
