//! What the backup tests share: writing data into a volume's image and taking a backup.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use serde_json::{Value, json};

use super::Cinder;

/// Writes `pattern` bytes over `len` at `offset` of a volume's image with qemu-io.
pub fn write_pattern(image: &Path, offset: &str, len: &str, pattern: u8) {
    let out = Command::new("qemu-io")
        .args(["-c", &format!("write -P {pattern} {offset} {len}")])
        .arg(image)
        .output()
        .expect("run qemu-io");
    assert!(out.status.success(), "qemu-io: {}", String::from_utf8_lossy(&out.stderr));
}

/// Creates a backup from `body` (the inside of `{"backup": ...}`) and waits until it is
/// available; returns its id.
pub async fn backup(c: &Cinder, body: Value, deadline: Instant) -> String {
    let (status, created) = c.post("/backups", json!({ "backup": body })).await;
    assert_eq!(status, 202, "create a backup: {created}");
    let id = created["backup"]["id"].as_str().expect("a backup id").to_owned();
    c.wait_status(&format!("/backups/{id}"), "available", deadline).await;
    id
}
