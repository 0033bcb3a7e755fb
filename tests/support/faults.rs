//! What the fault tests (`tests/faults.rs`) put under the real binary: a small file system
//! of its own that can be filled to the last byte, a `qemu-img` that hangs on demand, and
//! the checks that nothing it started is left running or unreaped.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A size-limited tmpfs mounted on a fresh directory, unmounted when dropped.
pub struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    /// Mounts a tmpfs of `mib` MiB, or says why it cannot (`None`): mounting needs root
    /// (or CAP_SYS_ADMIN), which a developer's machine or a container may not give.
    pub fn mount(mib: u64) -> Option<Self> {
        let dir = tempfile::tempdir().expect("create a mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m,mode=0755"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Self { dir }),
            Ok(o) => {
                eprintln!(
                    "skipped: cannot mount a tmpfs here ({}), so the full file system is not tested",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("skipped: cannot run mount ({e}), so the full file system is not tested");
                None
            }
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    fn filler(&self) -> PathBuf {
        self.dir.path().join("filler")
    }

    /// Fills the file system to its last byte with a file of its own; returns its size.
    pub fn fill(&self) -> u64 {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.filler())
            .expect("create the filler");
        let chunk = vec![0xa5u8; 64 << 10];
        let mut written = 0u64;
        // Whole chunks first, then single bytes for the last partial page.
        for size in [chunk.len(), 4096, 1] {
            while file.write_all(&chunk[..size]).is_ok() {
                written += size as u64;
            }
        }
        let _ = file.sync_all();
        written
    }

    /// Removes the filler: the space is free again.
    pub fn free(&self) {
        std::fs::remove_file(self.filler()).expect("remove the filler");
    }

    /// Free bytes, as statvfs says.
    pub fn free_bytes(&self) -> u64 {
        let out =
            Command::new("stat").args(["-f", "-c", "%a %S"]).arg(self.path()).output().expect("run stat");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut parts = text.split_whitespace().map(|p| p.parse::<u64>().unwrap_or(0));
        parts.next().unwrap_or(0) * parts.next().unwrap_or(0)
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        // Lazy: a process that still holds a file there (a killed ember's child) does not
        // keep the mount.
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// A directory holding a `qemu-img` that runs the real one, except for the subcommands
/// listed (one per line) in its `hang` file: those start a child `sleep <marker>` and wait
/// for it, as a qemu-img stuck on a dead NFS server would wait forever. Those listed in
/// its `slow` file take 3 s more (a long copy).
pub struct FakeQemuImg {
    dir: tempfile::TempDir,
    /// The argument of the hanging `sleep`, unique to this test run.
    pub marker: String,
}

impl FakeQemuImg {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("create the fake tool directory");
        let real = find_in_path("qemu-img").expect("qemu-img on PATH (Debian package qemu-utils)");
        let marker = format!("{}", 900_000 + std::process::id() % 90_000);
        let (hang, slow) = (dir.path().join("hang"), dir.path().join("slow"));
        let script = format!(
            "#!/bin/sh\n\
             if [ -f '{hang}' ] && grep -qx \"$1\" '{hang}'; then\n\
             \x20 sleep {marker} &\n\
             \x20 wait\n\
             fi\n\
             if [ -f '{slow}' ] && grep -qx \"$1\" '{slow}'; then sleep 3; fi\n\
             exec '{real}' \"$@\"\n",
            hang = hang.display(),
            slow = slow.display(),
            real = real.display(),
        );
        let path = dir.path().join("qemu-img");
        std::fs::write(&path, script).expect("write the fake qemu-img");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("make it executable");
        Self { dir, marker }
    }

    /// `PATH` with the fake first.
    pub fn path_env(&self) -> String {
        format!("{}:{}", self.dir.path().display(), std::env::var("PATH").unwrap_or_default())
    }

    /// Makes `subcommands` hang from now on (an empty list: none).
    pub fn hang(&self, subcommands: &[&str]) {
        self.list("hang", subcommands);
    }

    /// Makes `subcommands` take 3 s longer from now on (an empty list: none).
    pub fn slow(&self, subcommands: &[&str]) {
        self.list("slow", subcommands);
    }

    fn list(&self, name: &str, subcommands: &[&str]) {
        let path = self.dir.path().join(name);
        if subcommands.is_empty() {
            let _ = std::fs::remove_file(path);
        } else {
            std::fs::write(path, subcommands.join("\n") + "\n").expect("write the hang list");
        }
    }
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(program)).find(|p| p.is_file()))
}

/// The pids of the processes whose command line contains `needle`.
pub fn processes_with(needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).split('\0').any(|arg| arg == needle))
        })
        .collect()
}

/// The children of `parent` that are zombies (dead, not reaped).
pub fn zombie_children(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
            // `pid (comm) state ppid ...`: comm may hold spaces, so split after the last ')'.
            let mut rest = stat.rsplit_once(')').map(|r| r.1).unwrap_or_default().split_whitespace();
            let state = rest.next().unwrap_or_default();
            let ppid = rest.next().and_then(|p| p.parse::<u32>().ok());
            state == "Z" && ppid == Some(parent)
        })
        .collect()
}

/// Polls until `check` holds, or panics with `what` at the deadline.
pub async fn eventually(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "{what} (waited {limit:?})");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
