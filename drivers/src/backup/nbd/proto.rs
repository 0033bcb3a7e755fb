//! The NBD protocol's numbers and the small pieces of wire format shared by the handshake
//! and the transmission phase (as the protocol's `doc/proto.md` names them).

use crate::error::DriverError;

/// `NBDMAGIC`, the first eight bytes a server sends.
pub(super) const NBD_MAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: newstyle negotiation, and the prefix of every option the client sends.
pub(super) const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// The magic of every option reply.
pub(super) const OPT_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
pub(super) const REQUEST_MAGIC: u32 = 0x2560_9513;
pub(super) const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
pub(super) const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

/// Handshake flags (server) and client flags.
pub(super) const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
pub(super) const FLAG_NO_ZEROES: u16 = 1 << 1;

/// Options.
pub(super) const OPT_EXPORT_NAME: u32 = 1;
pub(super) const OPT_GO: u32 = 7;
pub(super) const OPT_STRUCTURED_REPLY: u32 = 8;
pub(super) const OPT_SET_META_CONTEXT: u32 = 10;

/// Option reply types; errors have bit 31 set.
pub(super) const REP_ACK: u32 = 1;
pub(super) const REP_INFO: u32 = 3;
pub(super) const REP_META_CONTEXT: u32 = 4;
pub(super) const REP_FLAG_ERROR: u32 = 1 << 31;
pub(super) const REP_ERR_UNSUP: u32 = REP_FLAG_ERROR | 1;
pub(super) const REP_ERR_POLICY: u32 = REP_FLAG_ERROR | 2;
pub(super) const REP_ERR_INVALID: u32 = REP_FLAG_ERROR | 3;
pub(super) const REP_ERR_PLATFORM: u32 = REP_FLAG_ERROR | 4;
pub(super) const REP_ERR_TLS_REQD: u32 = REP_FLAG_ERROR | 5;
pub(super) const REP_ERR_UNKNOWN: u32 = REP_FLAG_ERROR | 6;
pub(super) const REP_ERR_SHUTDOWN: u32 = REP_FLAG_ERROR | 7;
pub(super) const REP_ERR_BLOCK_SIZE_REQD: u32 = REP_FLAG_ERROR | 8;
pub(super) const REP_ERR_TOO_BIG: u32 = REP_FLAG_ERROR | 9;

/// `NBD_OPT_GO` information types.
pub(super) const INFO_EXPORT: u16 = 0;
pub(super) const INFO_BLOCK_SIZE: u16 = 3;

/// Transmission flags.
pub(super) const TF_HAS_FLAGS: u16 = 1 << 0;
pub(super) const TF_READ_ONLY: u16 = 1 << 1;
pub(super) const TF_SEND_FLUSH: u16 = 1 << 2;
pub(super) const TF_SEND_TRIM: u16 = 1 << 5;
pub(super) const TF_SEND_WRITE_ZEROES: u16 = 1 << 6;
pub(super) const TF_SEND_DF: u16 = 1 << 7;
pub(super) const TF_CAN_MULTI_CONN: u16 = 1 << 8;
pub(super) const TF_SEND_FAST_ZERO: u16 = 1 << 11;

/// Commands.
pub(super) const CMD_READ: u16 = 0;
pub(super) const CMD_WRITE: u16 = 1;
pub(super) const CMD_DISC: u16 = 2;
pub(super) const CMD_FLUSH: u16 = 3;
pub(super) const CMD_TRIM: u16 = 4;
pub(super) const CMD_WRITE_ZEROES: u16 = 6;
pub(super) const CMD_BLOCK_STATUS: u16 = 7;

/// Command flags.
pub(super) const CMD_FLAG_NO_HOLE: u16 = 1 << 1;
pub(super) const CMD_FLAG_FAST_ZERO: u16 = 1 << 4;

/// Structured reply flags and chunk types; error chunks have bit 15 set.
pub(super) const REPLY_FLAG_DONE: u16 = 1 << 0;
pub(super) const CHUNK_NONE: u16 = 0;
pub(super) const CHUNK_OFFSET_DATA: u16 = 1;
pub(super) const CHUNK_OFFSET_HOLE: u16 = 2;
pub(super) const CHUNK_BLOCK_STATUS: u16 = 5;
pub(super) const CHUNK_ERROR_BIT: u16 = 1 << 15;
pub(super) const CHUNK_ERROR: u16 = CHUNK_ERROR_BIT | 1;
pub(super) const CHUNK_ERROR_OFFSET: u16 = CHUNK_ERROR_BIT | 2;

/// `base:allocation` status flags.
pub(super) const STATE_ZERO: u32 = 1 << 1;

/// The meta context that gives the allocation map.
pub(super) const BASE_ALLOCATION: &str = "base:allocation";

/// The largest read or write payload when the server does not say (the protocol's advice).
pub(super) const DEFAULT_MAX_BLOCK: u32 = 32 << 20;

/// The length of a request header on the wire.
pub(super) const REQUEST_LEN: usize = 28;

/// A request header.
pub(super) fn request(flags: u16, command: u16, cookie: u64, offset: u64, length: u32) -> [u8; REQUEST_LEN] {
    let mut out = [0u8; REQUEST_LEN];
    out[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
    out[4..6].copy_from_slice(&flags.to_be_bytes());
    out[6..8].copy_from_slice(&command.to_be_bytes());
    out[8..16].copy_from_slice(&cookie.to_be_bytes());
    out[16..24].copy_from_slice(&offset.to_be_bytes());
    out[24..28].copy_from_slice(&length.to_be_bytes());
    out
}

/// A command's name, for error messages.
pub(super) fn command_name(command: u16) -> &'static str {
    match command {
        CMD_READ => "read",
        CMD_WRITE => "write",
        CMD_DISC => "disconnect",
        CMD_FLUSH => "flush",
        CMD_TRIM => "trim",
        CMD_WRITE_ZEROES => "write-zeroes",
        CMD_BLOCK_STATUS => "block-status",
        _ => "unknown command",
    }
}

/// The transmission flags of an export, as the handshake gave them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransmissionFlags(pub u16);

impl TransmissionFlags {
    pub fn read_only(self) -> bool {
        self.has(TF_READ_ONLY)
    }
    pub fn can_flush(self) -> bool {
        self.has(TF_SEND_FLUSH)
    }
    pub fn can_trim(self) -> bool {
        self.has(TF_SEND_TRIM)
    }
    pub fn can_write_zeroes(self) -> bool {
        self.has(TF_SEND_WRITE_ZEROES)
    }
    pub fn can_fast_zero(self) -> bool {
        self.has(TF_SEND_FAST_ZERO)
    }
    pub fn can_df(self) -> bool {
        self.has(TF_SEND_DF)
    }
    /// Whether several connections to the export see each other's writes and flushes.
    pub fn can_multi_conn(self) -> bool {
        self.has(TF_CAN_MULTI_CONN)
    }
    fn has(self, flag: u16) -> bool {
        self.0 & TF_HAS_FLAGS != 0 && self.0 & flag != 0
    }
}

/// What the handshake learnt about an export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportInfo {
    pub name: String,
    /// The export's size in bytes.
    pub size: u64,
    pub flags: TransmissionFlags,
    /// Block sizes from `NBD_INFO_BLOCK_SIZE` (1, 4096 and 32 MiB when the server says nothing).
    pub min_block: u32,
    pub preferred_block: u32,
    pub max_block: u32,
    /// Whether structured replies were negotiated (needed for block status).
    pub structured_replies: bool,
    /// The id of the `base:allocation` meta context, when the server gave one.
    pub allocation_context: Option<u32>,
}

/// An NBD error number's name (the protocol's subset of errno).
pub(super) fn errno_name(errno: u32) -> &'static str {
    match errno {
        1 => "EPERM (operation not permitted)",
        5 => "EIO (input/output error)",
        12 => "ENOMEM (out of memory)",
        22 => "EINVAL (invalid argument)",
        28 => "ENOSPC (no space left)",
        75 => "EOVERFLOW (request too large)",
        95 => "ENOTSUP (not supported)",
        108 => "ESHUTDOWN (server shutting down)",
        _ => "unknown error",
    }
}

/// The driver error for an error a server answered to one request.
pub(super) fn server_error(what: &str, errno: u32, message: &str) -> DriverError {
    let text = if message.is_empty() {
        format!("{what}: the server answered {} ({errno})", errno_name(errno))
    } else {
        format!("{what}: the server answered {} ({errno}): {message}", errno_name(errno))
    };
    match errno {
        28 => DriverError::NoSpace(text),
        22 | 75 => DriverError::InvalidInput(text),
        1 | 95 => DriverError::NotSupported(text),
        _ => DriverError::Backend(text),
    }
}

/// Big-endian reads from a slice that say which field was missing instead of panicking.
pub(super) struct Cursor<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Cursor<'a> {
    pub(super) fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Self { bytes, what }
    }

    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.bytes.len() < n {
            return Err(format!("{} is {} bytes short", self.what, n - self.bytes.len()));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    pub(super) fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(super) fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(super) fn u64(&mut self) -> Result<u64, String> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    pub(super) fn rest(&self) -> &'a [u8] {
        self.bytes
    }
}

/// Text a server sent (an error message, a context name), made printable and short.
pub(super) fn text(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    let s: String = s.chars().filter(|c| !c.is_control()).take(512).collect();
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_header_is_28_big_endian_bytes() {
        let r = request(CMD_FLAG_NO_HOLE, CMD_WRITE_ZEROES, 7, 4096, 512);
        assert_eq!(&r[0..4], &[0x25, 0x60, 0x95, 0x13]);
        assert_eq!(u16::from_be_bytes([r[4], r[5]]), 2);
        assert_eq!(u16::from_be_bytes([r[6], r[7]]), 6);
        assert_eq!(r[15], 7);
        assert_eq!(u64::from_be_bytes(r[16..24].try_into().unwrap()), 4096);
        assert_eq!(u32::from_be_bytes(r[24..28].try_into().unwrap()), 512);
    }

    #[test]
    fn flags_need_has_flags() {
        assert!(!TransmissionFlags(TF_READ_ONLY).read_only());
        let f = TransmissionFlags(TF_HAS_FLAGS | TF_READ_ONLY | TF_SEND_FLUSH);
        assert!(f.read_only() && f.can_flush() && !f.can_trim() && !f.can_write_zeroes());
    }

    #[test]
    fn server_errors_keep_their_kind() {
        assert_eq!(server_error("write", 28, "").kind(), "no_space");
        assert_eq!(server_error("read", 22, "bad").kind(), "invalid_input");
        assert_eq!(server_error("write", 1, "").kind(), "not_supported");
        let e = server_error("read at 0+512", 5, "disk on fire").to_string();
        assert!(e.contains("EIO") && e.contains("disk on fire") && e.contains("read at 0+512"), "{e}");
    }

    #[test]
    fn cursor_reports_short_fields() {
        let mut c = Cursor::new(&[0, 1, 2], "an info reply");
        assert_eq!(c.u16().unwrap(), 1);
        let e = c.u32().unwrap_err();
        assert!(e.contains("an info reply") && e.contains("3 bytes short"), "{e}");
    }
}
