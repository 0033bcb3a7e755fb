//! `tgtadm`, the control client of the tgt iSCSI target daemon: the few operations the
//! iSCSI exports need, and a parser of `--op show --mode target`, the only way to read
//! tgtd's state.
//!
//! tgtd keeps its targets in memory only, so the daemon's own listing is the truth: the
//! driver never caches it (a restarted tgtd has none, and `ensure_export` rebuilds them).

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{DriverError, Result};
use crate::file::image::run_within;

/// One target as `tgtadm --op show --mode target` lists it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Target {
    pub tid: u32,
    pub iqn: String,
    pub luns: Vec<Lun>,
    /// The CHAP accounts bound to it (incoming).
    pub accounts: Vec<String>,
    /// The initiator names and addresses admitted (`ALL` for anyone).
    pub acl: Vec<String>,
    /// The sessions open now.
    pub sessions: Vec<Session>,
}

/// A logged-in initiator (an I_T nexus) and its connections.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Session {
    pub sid: u64,
    pub initiator: String,
    pub cids: Vec<u32>,
}

/// A logical unit of a target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Lun {
    pub lun: u32,
    /// The backing store, `None` for the controller LUN 0.
    pub path: Option<PathBuf>,
    pub readonly: bool,
}

impl Target {
    pub(crate) fn lun(&self, lun: u32) -> Option<&Lun> {
        self.luns.iter().find(|l| l.lun == lun)
    }
}

/// A tgtd reached through its control port (`tgtadm -C`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tgtadm {
    pub control_port: u16,
    /// How long one call may take (`tgtadm_timeout`): tgtadm talks to tgtd over a local
    /// socket, and a stopped (not dead) daemon would leave it waiting forever.
    pub timeout: Duration,
}

impl Tgtadm {
    /// Runs `tgtadm -C <port> --lld iscsi <args>`; tgtd's refusals become errors that say
    /// what to do (install tgt, start tgtd).
    async fn run(&self, args: &[&str]) -> Result<String> {
        let port = self.control_port.to_string();
        let mut all = vec!["-C", port.as_str(), "--lld", "iscsi"];
        all.extend_from_slice(args);
        match run_within("tgtadm", &all, self.timeout).await {
            Ok(out) => Ok(String::from_utf8_lossy(&out).into_owned()),
            Err(DriverError::Command { stderr, .. }) if stderr.contains("tgt daemon") => {
                Err(DriverError::Backend(format!(
                    "tgtd is not running on control port {} (start it: systemctl start tgt): {stderr}",
                    self.control_port
                )))
            }
            Err(e) => Err(e),
        }
    }

    /// Runs a change that tgtd refuses with `already` (or `does not exist`) when it is done:
    /// a repeated call succeeds, as the driver's idempotence needs.
    async fn change(&self, args: &[&str], done_when: &str) -> Result<()> {
        match self.run(args).await {
            Ok(_) => Ok(()),
            Err(DriverError::Command { stderr, .. }) if stderr.contains(done_when) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Every target tgtd serves.
    pub(crate) async fn targets(&self) -> Result<Vec<Target>> {
        Ok(parse_show(&self.run(&["--op", "show", "--mode", "target"]).await?))
    }

    /// Checks that tgtd answers.
    pub(crate) async fn probe(&self) -> Result<()> {
        self.run(&["--op", "show", "--mode", "target"]).await.map(drop)
    }

    /// Creates a target; `Ok(false)` when the tid (or the name) is taken.
    pub(crate) async fn new_target(&self, tid: u32, iqn: &str) -> Result<bool> {
        let tid = tid.to_string();
        match self.run(&["--op", "new", "--mode", "target", "--tid", &tid, "-T", iqn]).await {
            Ok(_) => Ok(true),
            Err(DriverError::Command { stderr, .. }) if stderr.contains("already exists") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes a target, logging out whoever is still connected.
    pub(crate) async fn delete_target(&self, tid: u32) -> Result<()> {
        let tid = tid.to_string();
        self.change(
            &["--op", "delete", "--mode", "target", "--tid", &tid, "--force"],
            "can't find the target",
        )
        .await
    }

    /// Adds a LUN backed by a file, read and written with pread/pwrite (`rdwr`).
    pub(crate) async fn new_lun(&self, tid: u32, lun: u32, path: &str) -> Result<()> {
        let (tid, lun) = (tid.to_string(), lun.to_string());
        let args = ["--op", "new", "--mode", "logicalunit", "--tid", &tid, "--lun", &lun, "-b", path];
        self.change(&[&args[..], &["--bstype", "rdwr"]].concat(), "already exists").await
    }

    /// Makes a LUN refuse writes (tgtd answers them with DATA PROTECT).
    pub(crate) async fn set_readonly(&self, tid: u32, lun: u32) -> Result<()> {
        let (tid, lun) = (tid.to_string(), lun.to_string());
        let args = ["--op", "update", "--mode", "logicalunit", "--tid", &tid, "--lun", &lun];
        self.run(&[&args[..], &["--params", "readonly=1"]].concat()).await.map(drop)
    }

    /// Creates a CHAP account (global to tgtd).
    pub(crate) async fn new_account(&self, user: &str, password: &str) -> Result<()> {
        let args = ["--op", "new", "--mode", "account", "--user", user, "--password", password];
        self.change(&args, "already exists").await
    }

    /// Deletes a CHAP account.
    pub(crate) async fn delete_account(&self, user: &str) -> Result<()> {
        self.change(&["--op", "delete", "--mode", "account", "--user", user], "can't find").await
    }

    /// Requires the account's CHAP credentials to log in to a target.
    pub(crate) async fn bind_account(&self, tid: u32, user: &str) -> Result<()> {
        let tid = tid.to_string();
        self.change(&["--op", "bind", "--mode", "account", "--tid", &tid, "--user", user], "already exists")
            .await
    }

    /// Admits an initiator (by name) to a target.
    pub(crate) async fn bind_initiator(&self, tid: u32, initiator: &str) -> Result<()> {
        let tid = tid.to_string();
        self.change(&["--op", "bind", "--mode", "target", "--tid", &tid, "-Q", initiator], "already exists")
            .await
    }

    /// Closes a connection of a session, logging the initiator out.
    pub(crate) async fn close_connection(&self, tid: u32, sid: u64, cid: u32) -> Result<()> {
        let (tid, sid, cid) = (tid.to_string(), sid.to_string(), cid.to_string());
        let args = ["--op", "delete", "--mode", "conn", "--tid", &tid, "--sid", &sid, "--cid", &cid];
        self.change(&args, "can't find").await
    }

    /// Withdraws an initiator's admission; sessions it has open stay until it logs out
    /// (see [`Tgtadm::close_connection`]).
    pub(crate) async fn unbind_initiator(&self, tid: u32, initiator: &str) -> Result<()> {
        let tid = tid.to_string();
        self.change(&["--op", "unbind", "--mode", "target", "--tid", &tid, "-Q", initiator], "does not exist")
            .await
    }
}

/// Which block of a target's listing a line belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Other,
    Nexus,
    Luns,
    Accounts,
    Acl,
}

/// Parses `tgtadm --op show --mode target`. Unknown lines are skipped, so a newer tgt that
/// prints more still parses.
pub(crate) fn parse_show(text: &str) -> Vec<Target> {
    let mut targets: Vec<Target> = Vec::new();
    let mut section = Section::Other;
    for line in text.lines() {
        if let Some(head) = line.strip_prefix("Target ") {
            let Some((tid, iqn)) = head.split_once(": ") else { continue };
            let Ok(tid) = tid.trim().parse() else { continue };
            targets.push(Target { tid, iqn: iqn.trim().to_owned(), ..Target::default() });
            section = Section::Other;
            continue;
        }
        let Some(target) = targets.last_mut() else { continue };
        let item = line.trim();
        match item {
            "System information:" => section = Section::Other,
            "I_T nexus information:" => section = Section::Nexus,
            "LUN information:" => section = Section::Luns,
            "Account information:" => section = Section::Accounts,
            "ACL information:" => section = Section::Acl,
            "" => {}
            _ => read_item(target, section, item),
        }
    }
    targets
}

fn read_item(target: &mut Target, section: Section, item: &str) {
    match section {
        Section::Other => {}
        Section::Nexus => {
            if let Some(sid) = item.strip_prefix("I_T nexus: ") {
                if let Ok(sid) = sid.trim().parse() {
                    target.sessions.push(Session { sid, ..Session::default() });
                }
            } else if let Some(session) = target.sessions.last_mut() {
                if let Some(rest) = item.strip_prefix("Initiator: ") {
                    // `Initiator: <name> alias: <alias>`
                    session.initiator = rest.split_whitespace().next().unwrap_or_default().to_owned();
                } else if let Some(cid) = item.strip_prefix("Connection: ")
                    && let Ok(cid) = cid.trim().parse()
                {
                    session.cids.push(cid);
                }
            }
        }
        Section::Luns => {
            if let Some(n) = item.strip_prefix("LUN: ") {
                if let Ok(lun) = n.trim().parse() {
                    target.luns.push(Lun { lun, ..Lun::default() });
                }
            } else if let Some(lun) = target.luns.last_mut() {
                if let Some(path) = item.strip_prefix("Backing store path: ") {
                    lun.path = (path != "None").then(|| PathBuf::from(path));
                } else if let Some(flag) = item.strip_prefix("Readonly: ") {
                    lun.readonly = flag == "Yes";
                }
            }
        }
        Section::Accounts => {
            // Outgoing accounts are marked; only incoming ones gate logins.
            if !item.ends_with("(outgoing)") {
                target.accounts.push(item.to_owned());
            }
        }
        Section::Acl => target.acl.push(item.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOW: &str = "Target 1: iqn.2010-10.org.openstack:volume-a
    System information:
        Driver: iscsi
        State: ready
    I_T nexus information:
        I_T nexus: 3
            Initiator: iqn.2000-01.com.ex:a alias: none
            Connection: 0
                IP Address: 127.0.0.1
    LUN information:
        LUN: 0
            Type: controller
            Readonly: No
            Backing store type: null
            Backing store path: None
            Backing store flags: 
        LUN: 1
            Type: disk
            Size: 67 MB, Block size: 512
            Readonly: Yes
            Backing store type: rdwr
            Backing store path: /srv/volumes/volume-a
            Backing store flags: 
    Account information:
        u1
        out1 (outgoing)
    ACL information:
        iqn.2000-01.com.ex:a
Target 12: iqn.2010-10.org.openstack:volume-b:ro
    System information:
        Driver: iscsi
        State: ready
    I_T nexus information:
    LUN information:
        LUN: 0
            Type: controller
            Backing store path: None
    Account information:
    ACL information:
";

    #[test]
    fn the_listing_of_targets_is_parsed() {
        let targets = parse_show(SHOW);
        assert_eq!(targets.len(), 2);
        let a = &targets[0];
        assert_eq!((a.tid, a.iqn.as_str()), (1, "iqn.2010-10.org.openstack:volume-a"));
        assert_eq!(a.lun(0), Some(&Lun { lun: 0, path: None, readonly: false }));
        assert_eq!(
            a.lun(1),
            Some(&Lun { lun: 1, path: Some(PathBuf::from("/srv/volumes/volume-a")), readonly: true })
        );
        assert_eq!(a.accounts, ["u1"]);
        assert_eq!(a.acl, ["iqn.2000-01.com.ex:a"]);
        let session = Session { sid: 3, initiator: "iqn.2000-01.com.ex:a".to_owned(), cids: vec![0] };
        assert_eq!(a.sessions, [session]);
        let b = &targets[1];
        assert_eq!((b.tid, b.iqn.as_str()), (12, "iqn.2010-10.org.openstack:volume-b:ro"));
        assert!(b.lun(1).is_none() && b.accounts.is_empty() && b.acl.is_empty());
        assert!(parse_show("").is_empty());
        assert!(parse_show("garbage\nTarget x: y\n    LUN: 1").is_empty());
    }
}
