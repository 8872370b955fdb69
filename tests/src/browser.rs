//! A real browser for the pages people open: Debian's `chromium --headless` (installed by
//! `scripts/setup`), with a throwaway profile, and a check that a screenshot is a rendering.

use std::path::Path;

/// Run `chromium --headless ARGS` (as root it needs `--no-sandbox`), bounded at 60 s.
pub fn chromium(profile: &Path, args: &[&str]) -> std::process::Output {
    let out = std::process::Command::new("timeout")
        .args([
            "60",
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .env("HOME", profile)
        .output()
        .expect("Debian's chromium (scripts/setup installs it)");
    assert!(
        out.status.success(),
        "chromium {args:?}: {}",
        crate::text(&out)
    );
    out
}

/// The text of the first element carrying `data-field="NAME"` inside `within`.
pub fn field<'a>(within: &'a str, name: &str) -> &'a str {
    let tag = format!("data-field=\"{name}\"");
    let at = within
        .find(&tag)
        .unwrap_or_else(|| panic!("no {tag} in the page"));
    let rest = &within[at..];
    let start = rest.find('>').unwrap() + 1;
    let end = rest[start..].find('<').unwrap();
    &rest[start..start + end]
}

/// What a screenshot holds: (width, height, distinct colours, dark pixels).
pub fn screenshot_stats(png: &Path) -> (u32, u32, usize, usize) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let px = info.color_type.samples();
    let mut colours = std::collections::BTreeSet::new();
    let mut dark = 0usize;
    for p in buf[..info.buffer_size()].chunks(px) {
        let rgb = &p[..3.min(px)];
        colours.insert(rgb.to_vec());
        if rgb.iter().all(|c| *c < 100) {
            dark += 1;
        }
    }
    (info.width, info.height, colours.len(), dark)
}
