//! Blank qcow2 images written natively: the bytes `qemu-img create -f qcow2 PATH SIZE`
//! (qemu 10, default options) writes, without spawning it.
//!
//! Creating a blank volume is the one file-driver operation on every create's path, and
//! starting qemu-img costs more than the rest of it; every other image operation still
//! goes through qemu-img. Tests compare the bytes with qemu-img's own, for sizes from
//! 1 GiB to 2 TiB and more, and have `qemu-img check` accept the result.
//!
//! The layout of an empty image (qcow2 version 3, 64 KiB clusters, 16-bit refcounts, zlib
//! compression type, no extended L2 entries, no lazy refcounts):
//!
//! | cluster | holds |
//! |---|---|
//! | 0 | the header (112 bytes) and its feature-name table extension |
//! | 1 | the refcount table: one entry, the block at cluster 2 |
//! | 2 | the refcount block: refcount 1 for clusters 0 .. 3 + L1 clusters |
//! | 3.. | the L1 table, all zeros (no L2 table yet); the file ends with it |

use std::fs;
use std::io::{self, Write};
use std::path::Path;

const MAGIC: &[u8; 4] = b"QFI\xfb";
const VERSION: u32 = 3;
const CLUSTER_BITS: u32 = 16;
const CLUSTER: u64 = 1 << CLUSTER_BITS;
/// One L2 table (a cluster of 8-byte entries) maps this many bytes of the virtual disk.
const L2_COVERS: u64 = (CLUSTER / 8) * CLUSTER;
/// qemu's `QCOW_MAX_L1_SIZE`: larger images are refused.
const MAX_L1_BYTES: u64 = 32 << 20;
/// 2^4 = 16-bit refcounts, qemu's default.
const REFCOUNT_ORDER: u32 = 4;
/// The version 3 header up to and including the compression type, padded to 8 bytes.
const HEADER_LEN: u32 = 112;
const REFCOUNT_TABLE_OFFSET: u64 = CLUSTER;
const REFCOUNT_BLOCK_OFFSET: u64 = 2 * CLUSTER;
const L1_OFFSET: u64 = 3 * CLUSTER;
/// Header extension: the feature-name table qemu writes for every version 3 image.
const FEATURE_TABLE_MAGIC: u32 = 0x6803_f857;
/// (feature type: 0 incompatible, 1 compatible, 2 autoclear; bit; name), qemu 10's list.
const FEATURES: [(u8, u8, &str); 8] = [
    (0, 0, "dirty bit"),
    (0, 1, "corrupt bit"),
    (0, 2, "external data file"),
    (0, 3, "compression type"),
    (0, 4, "extended L2 entries"),
    (1, 0, "lazy refcounts"),
    (2, 0, "bitmaps"),
    (2, 1, "raw external data"),
];
const FEATURE_ENTRY_LEN: usize = 48;

/// The bytes of an empty qcow2 image of `size` bytes (a multiple of 512, as qemu-img
/// rounds sizes up to sectors), or `InvalidInput` for 0 and for sizes qemu refuses.
pub(crate) fn blank(size: u64) -> io::Result<Vec<u8>> {
    let invalid =
        |why: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("qcow2 of {size} bytes: {why}"));
    if size == 0 || !size.is_multiple_of(512) {
        return Err(invalid("the size must be a positive multiple of 512"));
    }
    let l1_entries = size.div_ceil(L2_COVERS);
    let l1_bytes = l1_entries * 8;
    if l1_bytes > MAX_L1_BYTES {
        return Err(invalid("too large"));
    }
    let l1_clusters = l1_bytes.div_ceil(CLUSTER);
    let len = usize::try_from(L1_OFFSET + l1_bytes).map_err(|_| invalid("too large"))?;
    let mut image = vec![0u8; len];

    let header = &mut image[..CLUSTER as usize];
    header[0..4].copy_from_slice(MAGIC);
    put_u32(header, 4, VERSION);
    // 8: backing file offset and 16: its length stay 0.
    put_u32(header, 20, CLUSTER_BITS);
    put_u64(header, 24, size);
    // 32: no encryption.
    put_u32(header, 36, l1_entries as u32);
    put_u64(header, 40, L1_OFFSET);
    put_u64(header, 48, REFCOUNT_TABLE_OFFSET);
    put_u32(header, 56, 1);
    // 60: no snapshots; 72, 80, 88: no incompatible, compatible or autoclear feature.
    put_u32(header, 96, REFCOUNT_ORDER);
    put_u32(header, 100, HEADER_LEN);
    // 104: compression type 0 (zlib), then padding.
    let table = HEADER_LEN as usize;
    put_u32(header, table, FEATURE_TABLE_MAGIC);
    put_u32(header, table + 4, (FEATURES.len() * FEATURE_ENTRY_LEN) as u32);
    for (i, (kind, bit, name)) in FEATURES.iter().enumerate() {
        let at = table + 8 + i * FEATURE_ENTRY_LEN;
        header[at] = *kind;
        header[at + 1] = *bit;
        header[at + 2..at + 2 + name.len()].copy_from_slice(name.as_bytes());
    }
    // The end-of-extensions marker after the table is all zeros.

    put_u64(&mut image, REFCOUNT_TABLE_OFFSET as usize, REFCOUNT_BLOCK_OFFSET);
    for cluster in 0..3 + l1_clusters {
        let at = (REFCOUNT_BLOCK_OFFSET + cluster * 2) as usize;
        image[at..at + 2].copy_from_slice(&1u16.to_be_bytes());
    }
    Ok(image)
}

/// Writes an empty qcow2 image of `size` bytes to a new file at `path` (replacing any),
/// without syncing it: the caller publishes it. Blocking.
pub(crate) fn write_blank(path: &Path, size: u64) -> io::Result<()> {
    let image = blank(size)?;
    let mut file = fs::OpenOptions::new().write(true).create(true).truncate(true).open(path)?;
    file.write_all(&image)
}

fn put_u32(buf: &mut [u8], at: usize, value: u32) {
    buf[at..at + 4].copy_from_slice(&value.to_be_bytes());
}

fn put_u64(buf: &mut [u8], at: usize, value: u64) {
    buf[at..at + 8].copy_from_slice(&value.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;
    use crate::GIB;

    fn qemu_img(args: &[&str], path: &Path) -> String {
        let out = Command::new("qemu-img").args(args).arg(path).output().expect("run qemu-img");
        assert!(out.status.success(), "qemu-img {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Byte for byte what qemu-img writes, from 1 GiB to 2 TiB (one L1 cluster), past 4 TiB
    /// (two) and at 256 TiB (64).
    #[test]
    fn blank_images_are_qemu_imgs_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let sizes = [1, 2, 3, 10, 100, 1000, 1024, 1500, 2048, 5 * 1024, 256 * 1024].map(|g: u64| g * GIB);
        for size in sizes.into_iter().chain([GIB + 512, 512]) {
            let theirs = dir.path().join(format!("qemu-{size}"));
            let out = Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2"])
                .arg(&theirs)
                .arg(size.to_string())
                .output()
                .expect("run qemu-img");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let ours = blank(size).unwrap();
            let expected = fs::read(&theirs).unwrap();
            assert_eq!(ours.len(), expected.len(), "{size}: length");
            if let Some(at) = ours.iter().zip(&expected).position(|(a, b)| a != b) {
                panic!("{size}: first difference at byte {at:#x}");
            }
        }
    }

    /// qemu-img reads the image as a blank qcow2 v3 of the size asked for, with no error or
    /// leak, and can write to it.
    #[test]
    fn qemu_img_accepts_the_images() {
        let dir = tempfile::tempdir().unwrap();
        for size in [GIB, 7 * GIB, 2048 * GIB] {
            let path = dir.path().join(format!("ours-{size}"));
            write_blank(&path, size).unwrap();
            let check = qemu_img(&["check", "--output=json", "-f", "qcow2"], &path);
            let check: serde_json::Value = serde_json::from_str(&check).unwrap();
            assert_eq!(check["check-errors"], 0, "{check}");
            assert!(check.get("leaks").is_none() && check.get("corruptions").is_none(), "{check}");
            let info: serde_json::Value =
                serde_json::from_str(&qemu_img(&["info", "--output=json", "-f", "qcow2"], &path)).unwrap();
            assert_eq!(info["format"], "qcow2");
            assert_eq!(info["virtual-size"], size);
            assert_eq!(info["cluster-size"], CLUSTER);
            assert_eq!(info["format-specific"]["data"]["compat"], "1.1");
            assert_eq!(info["format-specific"]["data"]["refcount-bits"], 16);
            assert_eq!(info["format-specific"]["data"]["lazy-refcounts"], false);
            assert!(info.get("backing-filename").is_none());
        }
        // A write allocates clusters and the image stays consistent.
        let path = dir.path().join("written");
        write_blank(&path, GIB).unwrap();
        let out = Command::new("qemu-io")
            .args(["-f", "qcow2", "-c", "write -P 0x5a 0 128k", "-c", "write -P 0xa5 700M 64k"])
            .arg(&path)
            .output();
        if let Ok(out) = out {
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            qemu_img(&["check", "-f", "qcow2"], &path);
        }
    }

    #[test]
    fn sizes_qemu_refuses_are_refused() {
        for size in [0, 511, GIB + 1, u64::MAX - 511] {
            assert_eq!(blank(size).unwrap_err().kind(), io::ErrorKind::InvalidInput, "{size}");
        }
    }
}
