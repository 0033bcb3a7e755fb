//! The control client of the tgt iSCSI target daemon (what `tgtadm` does, over tgtd's
//! control socket): the few operations the iSCSI exports need, and a parser of
//! `--op show --mode target`, the only way to read tgtd's state.
//!
//! tgtd keeps its targets in memory only, so the daemon's own listing is the truth: the
//! driver never caches it (a restarted tgtd has none, and `ensure_export` rebuilds them).

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{DriverError, Result};
use crate::file::tgt_ipc::{self, IpcError, Mode, Op, Refusal, Request};

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

/// A tgtd reached through its control port (`tgtadm -C`), spoken to over its control
/// socket ([`tgt_ipc`]) as tgtadm itself does, without spawning it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tgtadm {
    pub control_port: u16,
    /// How long one call may take (`tgtadm_timeout`): a stopped (not dead) daemon would
    /// leave a call waiting forever.
    pub timeout: Duration,
}

impl Tgtadm {
    /// Sends one request; tgtd's refusals come back as [`Refusal`]s for the caller to
    /// judge, everything else becomes an error that says what to do (install tgt, start
    /// tgtd).
    async fn send(&self, request: &Request) -> Result<std::result::Result<String, Refusal>> {
        let path = tgt_ipc::socket_path(self.control_port);
        match tgt_ipc::call(&path, request, self.timeout).await {
            Ok(text) => Ok(Ok(text)),
            Err(IpcError::Refused(refusal)) => Ok(Err(refusal)),
            Err(e @ IpcError::Unreachable { .. }) => Err(DriverError::Backend(format!(
                "tgtd is not running on control port {} (install the Debian package tgt and start \
                 tgtd: systemctl start tgt): {e}",
                self.control_port
            ))),
            Err(e @ IpcError::Timeout(_)) => Err(DriverError::Timeout(format!(
                "tgtd on control port {} ({:?} {:?}): {e}",
                self.control_port, request.op, request.mode
            ))),
            Err(e @ IpcError::Protocol { .. }) => Err(DriverError::Backend(e.to_string())),
        }
    }

    /// Runs a request that must succeed.
    async fn run(&self, request: Request) -> Result<String> {
        match self.send(&request).await? {
            Ok(text) => Ok(text),
            Err(refusal) => Err(refused(&request, refusal)),
        }
    }

    /// Runs a change that tgtd refuses with one of `done` when it is already done: a
    /// repeated call succeeds, as the driver's idempotence needs.
    async fn change(&self, request: Request, done: &[Refusal]) -> Result<()> {
        match self.send(&request).await? {
            Ok(_) => Ok(()),
            Err(refusal) if done.contains(&refusal) => Ok(()),
            Err(refusal) => Err(refused(&request, refusal)),
        }
    }

    /// Every target tgtd serves.
    pub(crate) async fn targets(&self) -> Result<Vec<Target>> {
        Ok(parse_show(&self.run(Request::new(Mode::Target, Op::Show)).await?))
    }

    /// Checks that tgtd answers.
    pub(crate) async fn probe(&self) -> Result<()> {
        self.run(Request::new(Mode::Target, Op::Show)).await.map(drop)
    }

    /// Creates a target; `Ok(false)` when the tid (or the name) is taken.
    pub(crate) async fn new_target(&self, tid: u32, iqn: &str) -> Result<bool> {
        let request = Request::new(Mode::Target, Op::New).tid(tid).param("targetname", iqn);
        match self.send(&request).await? {
            Ok(_) => Ok(true),
            Err(Refusal::TARGET_EXIST) => Ok(false),
            Err(refusal) => Err(refused(&request, refusal)),
        }
    }

    /// Deletes a target, logging out whoever is still connected.
    pub(crate) async fn delete_target(&self, tid: u32) -> Result<()> {
        self.change(Request::new(Mode::Target, Op::Delete).tid(tid).force(), &[Refusal::NO_TARGET]).await
    }

    /// Adds a LUN backed by a file, read and written with pread/pwrite (`rdwr`).
    pub(crate) async fn new_lun(&self, tid: u32, lun: u32, path: &str) -> Result<()> {
        let request =
            Request::new(Mode::Device, Op::New).tid(tid).lun(lun).param("path", path).param("bstype", "rdwr");
        self.change(request, &[Refusal::LUN_EXIST]).await
    }

    /// Makes a LUN refuse writes (tgtd answers them with DATA PROTECT).
    pub(crate) async fn set_readonly(&self, tid: u32, lun: u32) -> Result<()> {
        // What `tgtadm --params readonly=1` sends.
        let request = Request::new(Mode::Device, Op::Update).tid(tid).lun(lun).raw("targetOps readonly=1,");
        self.run(request).await.map(drop)
    }

    /// Creates a CHAP account (global to tgtd).
    pub(crate) async fn new_account(&self, user: &str, password: &str) -> Result<()> {
        let request = Request::new(Mode::Account, Op::New).param("user", user).param("password", password);
        self.change(request, &[Refusal::USER_EXIST]).await
    }

    /// Deletes a CHAP account.
    pub(crate) async fn delete_account(&self, user: &str) -> Result<()> {
        self.change(Request::new(Mode::Account, Op::Delete).param("user", user), &[Refusal::NO_USER]).await
    }

    /// Requires the account's CHAP credentials to log in to a target.
    pub(crate) async fn bind_account(&self, tid: u32, user: &str) -> Result<()> {
        let request = Request::new(Mode::Account, Op::Bind).tid(tid).param("user", user);
        self.change(request, &[Refusal::USER_EXIST, Refusal::BINDING_EXIST]).await
    }

    /// Admits an initiator (by name) to a target.
    pub(crate) async fn bind_initiator(&self, tid: u32, initiator: &str) -> Result<()> {
        let request = Request::new(Mode::Target, Op::Bind).tid(tid).param("initiator-name", initiator);
        self.change(request, &[Refusal::ACL_EXIST]).await
    }

    /// Closes a connection of a session, logging the initiator out.
    pub(crate) async fn close_connection(&self, tid: u32, sid: u64, cid: u32) -> Result<()> {
        let request = Request::new(Mode::Connection, Op::Delete).tid(tid).connection(sid, cid);
        self.change(request, &[Refusal::NO_TARGET, Refusal::NO_SESSION, Refusal::NO_CONNECTION]).await
    }

    /// Withdraws an initiator's admission; sessions it has open stay until it logs out
    /// (see [`Tgtadm::close_connection`]).
    pub(crate) async fn unbind_initiator(&self, tid: u32, initiator: &str) -> Result<()> {
        let request = Request::new(Mode::Target, Op::Unbind).tid(tid).param("initiator-name", initiator);
        self.change(request, &[Refusal::ACL_NOEXIST]).await
    }
}

/// tgtd's refusal of a request, as tgtadm would print it.
fn refused(request: &Request, refusal: Refusal) -> DriverError {
    DriverError::Backend(format!(
        "tgtd refused {:?} {:?} (tid {}): {}",
        request.op,
        request.mode,
        request.tid,
        refusal.message()
    ))
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
