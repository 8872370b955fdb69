//! The daemon's status page in a real browser: Debian's `chromium --headless` loads `/` from a
//! running daemon; the figures in its DOM equal `drd status --output json` and the store (read
//! with a second client), the timeline has one mark per recovery point, no secret or Function
//! URL is on the page, and a screenshot is not blank.

use drd_e2e::browser::{chromium, field, screenshot_stats};
use drd_e2e::daemon::*;
use drd_e2e::text;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn the_status_page_in_a_browser_shows_what_status_and_the_store_say() {
    let daemon = r#"
[daemon]
rpo = "1h"

[[daemon.schedule]]
job = "verify"
cron = "0 0 4 1 1 *"
"#;
    let w = World::new("sp-page", daemon).await;
    let policy = w.policy.to_str().unwrap().to_string();
    for _ in 0..3 {
        let out = w.sb.run(&["--policy", &policy, "backup"], "");
        assert!(out.status.success(), "{}", text(&out));
    }
    // One drill, so the page has a drill run to show.
    let out = w.sb.run(
        &[
            "--policy",
            &policy,
            "--output",
            "json",
            "drill",
            "run",
            "corrupt-live",
        ],
        "",
    );
    assert!(out.status.success(), "{}", text(&out));
    let drill: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let port = free_port();
    let (mut d, log) = w.start("sp", port, &[]);
    wait_for_log(&log, "drd daemon running", Duration::from_secs(30));

    let profile = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{port}/");
    let dom = String::from_utf8(chromium(profile.path(), &["--dump-dom", &url]).stdout).unwrap();
    let status =
        w.sb.run(&["--policy", &policy, "--output", "json", "status"], "");
    assert!(status.status.success(), "{}", text(&status));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let shot = profile.path().join("page.png");
    chromium(
        profile.path(),
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1000,1400",
            &url,
        ],
    );
    signal(&d, nix::sys::signal::Signal::SIGTERM);
    assert!(wait_exit(&mut d, Duration::from_secs(30)).success());

    let section = &dom[dom
        .find("data-stack=\"sp-page\"")
        .expect("the stack's section")..];
    assert_eq!(field(section, "region"), status["region"].as_str().unwrap());
    assert_eq!(
        field(section, "stack-status"),
        status["stack"]["status"].as_str().unwrap()
    );
    assert_eq!(
        field(section, "live-version"),
        status["live"]["version"].as_str().unwrap()
    );
    assert_eq!(
        field(section, "code-sha256"),
        status["live"]["code_sha256"].as_str().unwrap()
    );
    assert_eq!(
        field(section, "healthy"),
        if status["healthy"].as_bool().unwrap() {
            "yes"
        } else {
            "no"
        }
    );
    assert_eq!(
        field(section, "newest-point"),
        status["recovery"]["newest_point"]["id"].as_str().unwrap()
    );
    for p in status["probes"].as_array().unwrap() {
        let tier = p["tier"].as_str().unwrap();
        let row = &section[section
            .find(&format!("data-probe=\"{tier}\""))
            .expect("a probe row")..];
        assert_eq!(
            field(row, "probe-ok"),
            if p["ok"].as_bool().unwrap() {
                "ok"
            } else {
                "FAIL"
            }
        );
    }
    assert!(section.contains("data-field=\"rpo-seconds\" data-value=\"3600\""));
    assert_eq!(field(section, "within-rpo"), "within");
    // The timeline: one mark per point in the store (listed with a second client), each
    // titled with its id.
    let points = w.points().await;
    assert_eq!(points.len(), 3);
    assert_eq!(
        section.matches("<circle class=\"point\"").count(),
        points.len()
    );
    for (id, _) in &points {
        assert!(section.contains(&format!("<title>{id}</title>")), "{id}");
    }
    // The next firing of the scheduled verify: 04:00 on 1 January.
    let next = field(
        &section[section.find("data-job=\"verify\"").unwrap()..],
        "next",
    );
    assert!(next.ends_with("-01-01T04:00:00Z"), "{next}");
    // The drill: its last run's outcome and RTO, as its report says.
    let row = &section[section
        .find("data-drill=\"corrupt-live\"")
        .expect("a drill row")..];
    assert_eq!(
        field(row, "drill-outcome"),
        drill["outcome"].as_str().unwrap()
    );
    let rto = drill["measured"]["rto_seconds"].as_f64().unwrap();
    assert_eq!(field(row, "drill-rto"), format!("{rto:.1} s"));
    // Nothing secret, no endpoint.
    assert!(!dom.contains(KEY));
    assert!(
        !dom.contains("lambda-url"),
        "the Function URL is not on the page"
    );
    assert!(!dom.contains("arn:aws"), "no ARN on the page");

    // The screenshot is a real rendering: not one flat colour, and with dark (text) pixels.
    let (width, height, colours, dark) = screenshot_stats(&shot);
    assert!(width >= 800 && height >= 600, "{width}x{height}");
    assert!(colours > 20, "{colours} colours: a blank page");
    assert!(dark > 1000, "{dark} dark pixels: no text rendered");
}
