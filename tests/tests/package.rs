//! The real Lambda package: static, reproducible, runnable.

use drd::workload::package::{self, Package};
use drd_e2e::bootstrap;

#[test]
fn the_packaged_bootstrap_is_static_reproducible_and_runs() {
    let bin = std::fs::read(bootstrap()).unwrap();
    let a = Package::from_bootstrap(&bin).unwrap();
    let b = Package::from_bootstrap(&bin).unwrap();
    assert_eq!(a.zip, b.zip, "same binary, same zip bytes");
    assert_eq!(a.code_sha256(), b.code_sha256());

    let inside = package::read_bootstrap(&a.zip).unwrap();
    assert_eq!(inside, bin);
    assert_eq!(
        package::is_static_elf(&inside),
        Ok(true),
        "bootstrap must need no dynamic loader"
    );

    // It runs here as it would on provided.al2023: no loader, no shared libraries.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bootstrap");
    std::fs::write(&path, &inside).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = std::process::Command::new(&path)
        .arg("--version")
        .env_clear()
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("classifier "));
}
