//! The file driver's exports against real targets and initiators: iSCSI through a private
//! tgtd and a libiscsi initiator, NBD through qemu-nbd and qemu's and libnbd's clients.
//! Tests that need tgt or libiscsi say SKIPPED and pass when those are missing.

mod targets;

use std::path::PathBuf;
use std::process::Command;

use ember_drivers::{
    AccessMode, BackupSource, ConnectionInfo, Connector, DriverError, DriverSnapshot, DriverVolume,
    FileDriver, FileOptions, ImageFormat, TargetProtocol, VolumeDriver,
};
use serde_json::{Value, json};
use targets::{Login, Tgtd};

const A: &str = "iqn.2026-12.org.example:host-a";
const B: &str = "iqn.2026-12.org.example:host-b";
const PATTERN_LEN: usize = 1 << 20;

/// A fresh id, as the manager would give.
fn id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn connector(initiator: &str) -> Connector {
    let extra = json!({"initiator": initiator}).as_object().unwrap().clone();
    Connector { host: Some("compute".to_owned()), ip: Some("127.0.0.1".to_owned()), extra }
}

fn pattern(seed: u8) -> Vec<u8> {
    (0..PATTERN_LEN).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// A raw file backend exporting over iSCSI to a private tgtd.
struct IscsiFixture {
    dir: tempfile::TempDir,
    driver: FileDriver,
    tgtd: Tgtd,
    tool: &'static std::path::Path,
}

impl IscsiFixture {
    async fn new() -> Option<Self> {
        let tool = targets::initiator_tool()?;
        let tgtd = Tgtd::start()?;
        let dir = tempfile::tempdir().unwrap();
        let driver = FileDriver::new(FileOptions {
            data_dir: dir.path().join("volumes"),
            format: ImageFormat::Raw,
            target_protocol: TargetProtocol::Iscsi,
            target_port: tgtd.portal_port,
            tgt_control_port: tgtd.control_port,
            ..FileOptions::default()
        });
        driver.do_setup().await.unwrap();
        driver.check_for_setup_error().await.unwrap();
        Some(IscsiFixture { dir, driver, tgtd, tool })
    }

    fn scratch(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    async fn volume(&self) -> DriverVolume {
        let volume = DriverVolume::new(id(), 1);
        self.driver.create_volume(&volume).await.unwrap();
        volume
    }
}

/// A login as `initiator` with the credentials of `conn`.
fn login<'a>(conn: &'a ConnectionInfo, initiator: &'a str) -> Login<'a> {
    let field = |k: &str| conn.data[k].as_str().unwrap();
    Login {
        portal: field("target_portal"),
        target: field("target_iqn"),
        initiator,
        user: field("auth_username"),
        password: field("auth_password"),
    }
}

#[tokio::test]
async fn iscsi_data_written_by_one_host_is_read_by_the_next_and_strangers_are_refused() {
    let Some(fx) = IscsiFixture::new().await else { return };
    let v = fx.volume().await;
    let conn = fx.driver.initialize_connection(&v, &connector(A), AccessMode::Rw).await.unwrap();
    assert_eq!(conn.driver_volume_type, "iscsi");
    let data = &conn.data;
    assert_eq!(data["target_iqn"], format!("iqn.2010-10.org.openstack:volume-{}", v.id));
    assert_eq!(data["target_portal"], format!("127.0.0.1:{}", fx.tgtd.portal_port));
    assert_eq!((data["target_lun"].clone(), data["target_discovered"].clone()), (json!(1), json!(false)));
    assert_eq!((data["auth_method"].clone(), data["access_mode"].clone()), (json!("CHAP"), json!("rw")));
    assert_eq!((data["volume_id"].clone(), data["encrypted"].clone()), (json!(v.id), json!(false)));
    let record = fx.dir.path().join(format!("volumes/.ember/iscsi/volume-{}.json", v.id));
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&record).unwrap().permissions());
    assert_eq!(mode & 0o077, 0, "the CHAP secret is readable by others: {mode:o}");
    let again = fx.driver.initialize_connection(&v, &connector(A), AccessMode::Rw).await.unwrap();
    assert_eq!(again, conn, "a repeated call answers the same");

    let a = login(&conn, A);
    let wrote = a.write(fx.tool, &fx.scratch(), &pattern(3));
    assert!(wrote.ok(), "{}", wrote.stderr);
    let wrong = Login { password: "not-the-password", ..login(&conn, A) };
    let refused = wrong.read(fx.tool, &fx.scratch(), 512).0;
    assert!(!refused.ok() && refused.stderr.contains("Authentication failure"), "{}", refused.stderr);
    let stranger = login(&conn, B).read(fx.tool, &fx.scratch(), 512).0;
    assert!(!stranger.ok() && stranger.stderr.contains("login failed"), "{}", stranger.stderr);

    // No change that needs the volume still: tgt holds no image lock, the driver checks.
    let busy = fx.driver.extend_volume(&v, 2).await.unwrap_err();
    assert!(matches!(busy, DriverError::Busy(_)), "{busy:?}");
    let snapshot = DriverSnapshot::new(id(), v.id.clone(), 1);
    let busy = fx.driver.create_snapshot(&snapshot).await.unwrap_err();
    assert!(matches!(busy, DriverError::Busy(_)), "{busy:?}");
    let busy = fx.driver.create_cloned_volume(&DriverVolume::new(id(), 1), &v).await.unwrap_err();
    assert!(matches!(busy, DriverError::Busy(_)), "{busy:?}");
    assert_eq!(fx.driver.list_exports().await.unwrap(), vec![v.id.clone()]);

    // A leaves, B comes: A is out of the ACL and its open session is closed, B gets the
    // same target and credentials.
    let held = a.hold(fx.tool);
    fx.driver.terminate_connection(&v, &connector(A), AccessMode::Rw).await.unwrap();
    let after = held.read();
    assert!(!after.ok(), "A's session outlived terminate_connection");
    fx.driver.terminate_connection(&v, &connector(A), AccessMode::Rw).await.unwrap();
    assert!(!a.read(fx.tool, &fx.scratch(), 512).0.ok(), "A is still admitted");
    let conn_b = fx.driver.initialize_connection(&v, &connector(B), AccessMode::Rw).await.unwrap();
    assert_eq!(conn_b, conn);
    let (read, back) = login(&conn_b, B).read(fx.tool, &fx.scratch(), PATTERN_LEN);
    assert!(read.ok(), "{}", read.stderr);
    assert!(back == pattern(3), "B reads what A wrote");

    // remove_export leaves no target and no account; the data is the volume's.
    fx.driver.remove_export(&v).await.unwrap();
    fx.driver.remove_export(&v).await.unwrap();
    assert!(!fx.tgtd.show().contains("Target "), "{}", fx.tgtd.show());
    let accounts = fx.tgtd.tgtadm(&["--op", "show", "--mode", "account"]);
    assert!(
        !String::from_utf8_lossy(&accounts.stdout).contains(conn.data["auth_username"].as_str().unwrap())
    );
    assert!(fx.driver.list_exports().await.unwrap().is_empty());
    assert!(!login(&conn_b, B).read(fx.tool, &fx.scratch(), 512).0.ok());
    let raw = fx.driver.export_for_backup(BackupSource::Volume(&v)).await.unwrap();
    let mut head = vec![0; PATTERN_LEN];
    std::io::Read::read_exact(&mut std::fs::File::open(&raw.path).unwrap(), &mut head).unwrap();
    assert!(head == pattern(3), "the volume's file holds what A wrote");
    fx.driver.release_export(raw).await.unwrap();
    fx.driver.extend_volume(&v, 2).await.unwrap();

    // The credentials outlive the export, not the volume; deleting stops exports first.
    let conn_again = fx.driver.initialize_connection(&v, &connector(A), AccessMode::Rw).await.unwrap();
    assert_eq!(conn_again.data["auth_password"], conn.data["auth_password"]);
    fx.driver.delete_volume(&v).await.unwrap();
    assert!(!fx.tgtd.show().contains("Target "));
    let records = std::fs::read_dir(fx.dir.path().join("volumes/.ember/iscsi")).unwrap().count();
    assert_eq!(records, 0, "the CHAP record outlived the volume");
}

#[tokio::test]
async fn iscsi_read_only_attachments_get_a_target_that_refuses_writes() {
    let Some(fx) = IscsiFixture::new().await else { return };
    let v = fx.volume().await;
    let rw = fx.driver.initialize_connection(&v, &connector(A), AccessMode::Rw).await.unwrap();
    assert!(login(&rw, A).write(fx.tool, &fx.scratch(), &pattern(5)).ok());
    let ro = fx.driver.initialize_connection(&v, &connector(B), AccessMode::Ro).await.unwrap();
    assert_eq!(ro.data["access_mode"], "ro");
    assert_eq!(ro.data["target_iqn"], format!("iqn.2010-10.org.openstack:volume-{}:ro", v.id));
    assert_eq!(ro.data["auth_username"], rw.data["auth_username"]);

    let b = login(&ro, B);
    let refused = b.write(fx.tool, &fx.scratch(), &pattern(6));
    assert!(!refused.ok() && refused.stderr.contains("DATA PROTECTION"), "{}", refused.stderr);
    let (read, back) = b.read(fx.tool, &fx.scratch(), PATTERN_LEN);
    assert!(read.ok(), "{}", read.stderr);
    assert!(back == pattern(5), "the read-only target serves the volume's data");
    // B was admitted to the read-only target only.
    assert!(!login(&rw, B).read(fx.tool, &fx.scratch(), 512).0.ok());

    fx.driver.remove_export(&v).await.unwrap();
    assert!(!fx.tgtd.show().contains("Target "), "{}", fx.tgtd.show());
}

#[tokio::test]
async fn iscsi_ensure_export_rebuilds_targets_a_tgtd_restart_lost() {
    let Some(mut fx) = IscsiFixture::new().await else { return };
    let v = fx.volume().await;
    let grants = [(connector(A), AccessMode::Rw), (connector(B), AccessMode::Ro)];
    fx.driver.ensure_export(&v, &grants).await.unwrap();
    let conn = fx.driver.initialize_connection(&v, &connector(A), AccessMode::Rw).await.unwrap();
    assert!(login(&conn, A).write(fx.tool, &fx.scratch(), &pattern(8)).ok());

    fx.tgtd.restart();
    assert!(fx.driver.list_exports().await.unwrap().is_empty(), "tgtd kept its targets");
    fx.driver.ensure_export(&v, &grants).await.unwrap();
    fx.driver.ensure_export(&v, &grants).await.unwrap();
    assert_eq!(fx.driver.list_exports().await.unwrap(), vec![v.id.clone()]);
    let (read, back) = login(&conn, A).read(fx.tool, &fx.scratch(), PATTERN_LEN);
    assert!(read.ok(), "{}", read.stderr);
    assert!(back == pattern(8));
    let ro = fx.driver.initialize_connection(&v, &connector(B), AccessMode::Ro).await.unwrap();
    assert!(login(&ro, B).read(fx.tool, &fx.scratch(), 512).0.ok());
    assert!(!login(&ro, B).write(fx.tool, &fx.scratch(), &pattern(9)).ok());
    fx.driver.delete_volume(&v).await.unwrap();
}

#[tokio::test]
async fn iscsi_setup_and_requests_fail_cleanly() {
    // qcow2 cannot be served by tgt.
    let dir = tempfile::tempdir().unwrap();
    let options = FileOptions {
        data_dir: dir.path().join("volumes"),
        target_protocol: TargetProtocol::Iscsi,
        ..FileOptions::default()
    };
    let driver = FileDriver::new(options.clone());
    driver.do_setup().await.unwrap();
    let err = driver.check_for_setup_error().await.unwrap_err();
    assert!(matches!(err, DriverError::InvalidInput(_)) && err.to_string().contains("raw"), "{err}");

    // No tgtd on the control port: a clear error, at once.
    if !targets::installed("tgtadm") {
        eprintln!("SKIPPED: tgtadm missing (install the Debian package tgt)");
        return;
    }
    let nobody = targets::unused_control_port();
    let driver =
        FileDriver::new(FileOptions { format: ImageFormat::Raw, tgt_control_port: nobody, ..options });
    driver.do_setup().await.unwrap();
    let started = std::time::Instant::now();
    let err = driver.check_for_setup_error().await.unwrap_err();
    assert!(err.to_string().contains("tgtd is not running"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));

    // A connector without an initiator name cannot be put in an ACL.
    let v = DriverVolume::new(id(), 1);
    driver.create_volume(&v).await.unwrap();
    for bad in [Connector::default(), connector("ALL"), connector("-T x")] {
        let err = driver.initialize_connection(&v, &bad, AccessMode::Rw).await.unwrap_err();
        assert!(matches!(err, DriverError::InvalidInput(_)), "{err:?}");
    }
}

/// A temporary data directory whose NBD export daemon (persistent, daemonized) is killed
/// when it goes, so a failing test leaves none behind.
struct NbdDir(tempfile::TempDir);

impl NbdDir {
    fn new() -> Self {
        NbdDir(tempfile::tempdir().unwrap())
    }

    fn path(&self) -> &std::path::Path {
        self.0.path()
    }

    fn volumes(&self) -> PathBuf {
        self.path().join("volumes")
    }
}

impl Drop for NbdDir {
    fn drop(&mut self) {
        let _ = ember_drivers::file::kill_nbd_daemon(&self.volumes());
    }
}

/// A file backend exporting over NBD (the default).
async fn nbd_driver(dir: &NbdDir) -> FileDriver {
    let driver = FileDriver::new(FileOptions { data_dir: dir.volumes(), ..FileOptions::default() });
    driver.do_setup().await.unwrap();
    driver.check_for_setup_error().await.unwrap();
    driver
}

/// `qemu-io` on an NBD export, opened read-write (refused by a read-only export) or not.
fn qemu_io(uri: &str, command: &str, writable: bool) -> std::process::Output {
    let mode = if writable { "--cache=writeback" } else { "-r" };
    Command::new("qemu-io").args(["-f", "raw", mode, "-c", command, uri]).output().unwrap()
}

fn output(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout)
}

#[tokio::test]
async fn nbd_read_only_attachments_get_an_export_that_refuses_writes() {
    let dir = NbdDir::new();
    let driver = nbd_driver(&dir).await;
    let v = DriverVolume::new(id(), 1);
    driver.create_volume(&v).await.unwrap();
    let ro = driver.initialize_connection(&v, &connector(A), AccessMode::Ro).await.unwrap();
    assert_eq!(ro.driver_volume_type, "nbd");
    assert_eq!(ro.data["access_mode"], "ro");
    assert_eq!(ro.data["export_name"], format!("volume-{}.ro", v.id));
    assert_eq!(driver.initialize_connection(&v, &connector(B), AccessMode::Ro).await.unwrap(), ro);
    let ro_uri = ro.data["uri"].as_str().unwrap().to_owned();

    let write = qemu_io(&ro_uri, "write -P 7 0 64k", true);
    let said = output(&write);
    assert!(said.contains("ermission denied") || said.contains("read-only"), "write accepted: {said}");
    let read = qemu_io(&ro_uri, "read -P 0 0 64k", false);
    assert!(read.status.success(), "{}", output(&read));
    if targets::installed("nbdinfo") {
        let info = Command::new("nbdinfo").args(["--json", &ro_uri]).output().unwrap();
        let info: Value = serde_json::from_slice(&info.stdout).unwrap();
        assert_eq!(info["exports"][0]["is_read_only"], true, "{info}");
    }

    // A writer joins the reader (one daemon, one image node reopened writable): what it
    // writes the reader sees, and the reader still cannot write.
    let rw = driver.initialize_connection(&v, &connector(A), AccessMode::Rw).await.unwrap();
    assert_eq!(
        (rw.data["access_mode"].clone(), rw.data["export_name"].clone()),
        (json!("rw"), json!(v.name()))
    );
    assert_eq!(rw.data["port"], ro.data["port"], "one NBD server per backend");
    let rw_uri = rw.data["uri"].as_str().unwrap().to_owned();
    let wrote = qemu_io(&rw_uri, "write -P 9 0 64k", true);
    assert!(wrote.status.success(), "{}", output(&wrote));
    let seen = qemu_io(&ro_uri, "read -P 9 0 64k", false);
    assert!(seen.status.success(), "{}", output(&seen));
    assert!(!qemu_io(&ro_uri, "write -P 7 0 64k", true).status.success(), "the reader writes");
    assert_eq!(driver.initialize_connection(&v, &connector(A), AccessMode::Rw).await.unwrap(), rw);

    assert_eq!(driver.list_exports().await.unwrap(), vec![v.id.clone()]);
    let busy = driver.extend_volume(&v, 2).await.unwrap_err();
    assert!(matches!(busy, DriverError::Busy(_)), "{busy:?}");
    driver.remove_export(&v).await.unwrap();
    driver.remove_export(&v).await.unwrap();
    assert!(driver.list_exports().await.unwrap().is_empty());
    assert!(ember_drivers::file::nbd_exported_volumes(&dir.volumes()).unwrap().is_empty());
    for uri in [&ro_uri, &rw_uri] {
        assert!(!qemu_io(uri, "read 0 4k", false).status.success(), "{uri} outlived remove_export");
    }
    // The image is closed: a change that needs it whole goes through.
    driver.extend_volume(&v, 2).await.unwrap();
    driver.delete_volume(&v).await.unwrap();
}

#[tokio::test]
async fn nbd_ensure_export_restarts_a_dead_daemon_on_the_same_address() {
    let dir = NbdDir::new();
    let driver = nbd_driver(&dir).await;
    let v = DriverVolume::new(id(), 1);
    driver.create_volume(&v).await.unwrap();
    let grants = [(connector(A), AccessMode::Rw)];
    driver.ensure_export(&v, &grants).await.unwrap();
    let before = driver.initialize_connection(&v, &connector(A), AccessMode::Rw).await.unwrap();
    assert!(ember_drivers::file::kill_nbd_daemon(&dir.volumes()).unwrap(), "no daemon ran");
    assert!(driver.list_exports().await.unwrap().is_empty());
    driver.ensure_export(&v, &grants).await.unwrap();
    assert_eq!(driver.list_exports().await.unwrap(), vec![v.id.clone()]);
    let conn = driver.initialize_connection(&v, &connector(A), AccessMode::Rw).await.unwrap();
    assert_eq!(conn, before, "the attachment's connection info stays right");
    assert!(qemu_io(conn.data["uri"].as_str().unwrap(), "write -P 9 0 64k", true).status.success());
    driver.remove_export(&v).await.unwrap();
    driver.delete_volume(&v).await.unwrap();
}

#[tokio::test]
async fn nbd_exports_survive_a_restart_of_the_volume_service() {
    let dir = NbdDir::new();
    let v = DriverVolume::new(id(), 1);
    let conn = {
        let driver = nbd_driver(&dir).await;
        driver.create_volume(&v).await.unwrap();
        let conn = driver.initialize_connection(&v, &connector(A), AccessMode::Rw).await.unwrap();
        let wrote = qemu_io(conn.data["uri"].as_str().unwrap(), "write -P 5 0 64k", true);
        assert!(wrote.status.success(), "{}", output(&wrote));
        conn
    };
    // A new driver on the same directory (the volume service restarted) finds the daemon
    // and its export without re-creating anything, and the old address still serves.
    let driver = nbd_driver(&dir).await;
    assert_eq!(driver.list_exports().await.unwrap(), vec![v.id.clone()]);
    assert_eq!(ember_drivers::file::nbd_exported_volumes(&dir.volumes()).unwrap(), vec![v.id.clone()]);
    let read = qemu_io(conn.data["uri"].as_str().unwrap(), "read -P 5 0 64k", false);
    assert!(read.status.success(), "{}", output(&read));
    assert_eq!(driver.initialize_connection(&v, &connector(A), AccessMode::Rw).await.unwrap(), conn);
    driver.delete_volume(&v).await.unwrap();
    assert!(driver.list_exports().await.unwrap().is_empty());
}
