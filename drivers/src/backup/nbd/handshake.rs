//! The fixed newstyle handshake: structured replies, the `base:allocation` meta context and
//! `NBD_OPT_GO` for one named export (falling back to `NBD_OPT_EXPORT_NAME` on servers
//! without `NBD_OPT_GO`).

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::proto::*;
use crate::error::{DriverError, Result};

/// The longest option reply accepted: replies are a few bytes; anything larger is garbage.
const MAX_OPTION_REPLY: u32 = 64 << 10;

/// One option reply.
struct OptionReply {
    kind: u32,
    data: Vec<u8>,
}

/// Negotiates `export` on a fresh connection and leaves it in the transmission phase.
/// `server` names the server in error messages.
pub(super) async fn negotiate<S>(stream: &mut S, export: &str, server: &str) -> Result<ExportInfo>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut h = Handshake { stream, server };
    h.greeting().await?;
    let structured_replies = h.structured_replies().await?;
    let allocation_context = if structured_replies { h.allocation_context(export).await? } else { None };
    let mut info = match h.go(export).await? {
        Some(info) => info,
        None => h.export_name(export).await?,
    };
    info.structured_replies = structured_replies;
    info.allocation_context = allocation_context;
    Ok(info)
}

struct Handshake<'a, S> {
    stream: &'a mut S,
    server: &'a str,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Handshake<'_, S> {
    fn error(&self, message: impl std::fmt::Display) -> DriverError {
        DriverError::Backend(format!("NBD handshake with {}: {message}", self.server))
    }

    fn io(&self, e: std::io::Error) -> DriverError {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            self.error("the server closed the connection")
        } else {
            self.error(e)
        }
    }

    async fn read_u16(&mut self) -> Result<u16> {
        self.stream.read_u16().await.map_err(|e| self.io(e))
    }

    async fn read_u32(&mut self) -> Result<u32> {
        self.stream.read_u32().await.map_err(|e| self.io(e))
    }

    async fn read_u64(&mut self) -> Result<u64> {
        self.stream.read_u64().await.map_err(|e| self.io(e))
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.write_all(bytes).await.map_err(|e| self.io(e))?;
        self.stream.flush().await.map_err(|e| self.io(e))
    }

    /// The server's magic and flags, and the client's flags.
    async fn greeting(&mut self) -> Result<()> {
        if self.read_u64().await? != NBD_MAGIC {
            return Err(self.error("not an NBD server (no NBDMAGIC)"));
        }
        if self.read_u64().await? != IHAVEOPT {
            return Err(self.error("the server speaks oldstyle negotiation, which this client does not"));
        }
        let flags = self.read_u16().await?;
        if flags & FLAG_FIXED_NEWSTYLE == 0 {
            return Err(self.error("the server does not offer fixed newstyle negotiation"));
        }
        let client = u32::from(FLAG_FIXED_NEWSTYLE | (flags & FLAG_NO_ZEROES));
        self.write(&client.to_be_bytes()).await
    }

    async fn send_option(&mut self, option: u32, data: &[u8]) -> Result<()> {
        let len = u32::try_from(data.len()).map_err(|_| self.error("option too long"))?;
        let mut out = Vec::with_capacity(16 + data.len());
        out.extend_from_slice(&IHAVEOPT.to_be_bytes());
        out.extend_from_slice(&option.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(data);
        self.write(&out).await
    }

    async fn reply(&mut self, option: u32) -> Result<OptionReply> {
        if self.read_u64().await? != OPT_REPLY_MAGIC {
            return Err(self.error("bad option reply magic"));
        }
        let echoed = self.read_u32().await?;
        if echoed != option {
            return Err(self.error(format!("reply to option {echoed} while option {option} was asked")));
        }
        let kind = self.read_u32().await?;
        let len = self.read_u32().await?;
        if len > MAX_OPTION_REPLY {
            return Err(self.error(format!("option reply of {len} bytes")));
        }
        let mut data = vec![0u8; len as usize];
        self.stream.read_exact(&mut data).await.map_err(|e| self.io(e))?;
        Ok(OptionReply { kind, data })
    }

    async fn structured_replies(&mut self) -> Result<bool> {
        self.send_option(OPT_STRUCTURED_REPLY, &[]).await?;
        loop {
            let reply = self.reply(OPT_STRUCTURED_REPLY).await?;
            match reply.kind {
                REP_ACK => return Ok(true),
                kind if kind & REP_FLAG_ERROR != 0 => return Ok(false),
                _ => continue,
            }
        }
    }

    /// Asks for `base:allocation`; the id the server gave it, if any.
    async fn allocation_context(&mut self, export: &str) -> Result<Option<u32>> {
        let mut data = Vec::new();
        push_string(&mut data, export);
        data.extend_from_slice(&1u32.to_be_bytes());
        push_string(&mut data, BASE_ALLOCATION);
        self.send_option(OPT_SET_META_CONTEXT, &data).await?;
        let mut id = None;
        loop {
            let reply = self.reply(OPT_SET_META_CONTEXT).await?;
            match reply.kind {
                REP_ACK => return Ok(id),
                REP_META_CONTEXT => {
                    let mut c = Cursor::new(&reply.data, "a meta context reply");
                    let context = c.u32().map_err(|e| self.error(e))?;
                    if c.rest() == BASE_ALLOCATION.as_bytes() {
                        id = Some(context);
                    }
                }
                REP_ERR_UNKNOWN => return Err(self.unknown_export(export, &reply.data)),
                kind if kind & REP_FLAG_ERROR != 0 => return Ok(None),
                _ => continue,
            }
        }
    }

    /// `NBD_OPT_GO`; `None` when the server does not know the option.
    async fn go(&mut self, export: &str) -> Result<Option<ExportInfo>> {
        let mut data = Vec::new();
        push_string(&mut data, export);
        data.extend_from_slice(&1u16.to_be_bytes());
        data.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
        self.send_option(OPT_GO, &data).await?;
        let mut info = ExportInfo {
            name: export.to_owned(),
            size: 0,
            flags: TransmissionFlags(0),
            min_block: 1,
            preferred_block: 4096,
            max_block: DEFAULT_MAX_BLOCK,
            structured_replies: false,
            allocation_context: None,
        };
        let mut got_export = false;
        loop {
            let reply = self.reply(OPT_GO).await?;
            match reply.kind {
                REP_ACK if got_export => return Ok(Some(info)),
                REP_ACK => return Err(self.error("the server finished NBD_OPT_GO without the export's size")),
                REP_INFO => got_export |= self.info(&reply.data, &mut info)?,
                REP_ERR_UNSUP => return Ok(None),
                REP_ERR_UNKNOWN => return Err(self.unknown_export(export, &reply.data)),
                kind if kind & REP_FLAG_ERROR != 0 => {
                    return Err(self.option_error(export, kind, &reply.data));
                }
                _ => continue,
            }
        }
    }

    /// One `NBD_REP_INFO`; true when it was `NBD_INFO_EXPORT`.
    fn info(&self, data: &[u8], info: &mut ExportInfo) -> Result<bool> {
        let mut c = Cursor::new(data, "an NBD_REP_INFO reply");
        let parse = |c: &mut Cursor<'_>, info: &mut ExportInfo| -> Result<bool, String> {
            match c.u16()? {
                INFO_EXPORT => {
                    info.size = c.u64()?;
                    info.flags = TransmissionFlags(c.u16()?);
                    Ok(true)
                }
                INFO_BLOCK_SIZE => {
                    let (min, preferred, max) = (c.u32()?, c.u32()?, c.u32()?);
                    if !min.is_power_of_two() || min > 64 << 10 || max < min || preferred < min {
                        return Err(format!("block sizes min {min}, preferred {preferred}, max {max}"));
                    }
                    info.min_block = min;
                    info.preferred_block = preferred;
                    info.max_block = max;
                    Ok(false)
                }
                _ => Ok(false),
            }
        };
        parse(&mut c, info).map_err(|e| self.error(e))
    }

    /// `NBD_OPT_EXPORT_NAME`, for servers without `NBD_OPT_GO`.
    async fn export_name(&mut self, export: &str) -> Result<ExportInfo> {
        self.send_option(OPT_EXPORT_NAME, export.as_bytes()).await?;
        let size = self.read_u64().await.map_err(|_| {
            self.error(format!("the server closed the connection: it has no export named {export:?}"))
        })?;
        let flags = TransmissionFlags(self.read_u16().await?);
        // The 124 zero bytes are sent unless both sides agreed to NO_ZEROES; this client
        // always asks for it when offered, so whether they come is the server's choice,
        // and a server that offers it must honour it.
        Ok(ExportInfo {
            name: export.to_owned(),
            size,
            flags,
            min_block: 1,
            preferred_block: 4096,
            max_block: DEFAULT_MAX_BLOCK,
            structured_replies: false,
            allocation_context: None,
        })
    }

    fn unknown_export(&self, export: &str, data: &[u8]) -> DriverError {
        let message = text(data);
        tracing::debug!(server = self.server, export, %message, "unknown NBD export");
        DriverError::NotFound { resource: "NBD export", id: format!("{export:?} on {}", self.server) }
    }

    fn option_error(&self, export: &str, kind: u32, data: &[u8]) -> DriverError {
        let why = match kind {
            REP_ERR_POLICY => "refused by the server's policy",
            REP_ERR_INVALID => "the request was invalid",
            REP_ERR_PLATFORM => "not supported on the server's platform",
            REP_ERR_TLS_REQD => "the server requires TLS, which this client does not speak",
            REP_ERR_SHUTDOWN => "the server is shutting down",
            REP_ERR_BLOCK_SIZE_REQD => "the server requires block size negotiation",
            REP_ERR_TOO_BIG => "the request was too big",
            _ => "an unknown error",
        };
        let message = text(data);
        let e = self.error(format!("cannot open export {export:?}: {why} ({kind:#x}) {message}"));
        match kind {
            REP_ERR_TLS_REQD | REP_ERR_PLATFORM => DriverError::NotSupported(e.to_string()),
            _ => e,
        }
    }
}

fn push_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}
