//! The client against a scripted server on an in-memory pipe: replies out of order and in
//! pieces, server errors, and malformed or random replies, which must give errors (never a
//! panic or a hang). The real servers are tested in `drivers/tests/nbd_client.rs`.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::proto::*;
use super::{NbdAddress, NbdClient, NbdOptions, NbdTarget};
use crate::backup::Extent;
use crate::error::DriverError;
use crate::types::ConnectionInfo;

const SIZE: u64 = 8 << 20;
const MAX_BLOCK: u32 = 1 << 20;
const CONTEXT: u32 = 7;
const RW: u16 = TF_HAS_FLAGS | TF_SEND_FLUSH | TF_SEND_TRIM | TF_SEND_WRITE_ZEROES;

/// The server's end of the pipe.
struct Server {
    s: DuplexStream,
}

/// A request as the server reads it.
#[derive(Debug, Clone, Copy)]
struct Req {
    flags: u16,
    command: u16,
    cookie: u64,
    offset: u64,
    length: u32,
}

impl Server {
    async fn option_reply(&mut self, option: u32, kind: u32, data: &[u8]) {
        let mut out = Vec::new();
        out.extend_from_slice(&OPT_REPLY_MAGIC.to_be_bytes());
        out.extend_from_slice(&option.to_be_bytes());
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(data);
        self.s.write_all(&out).await.unwrap();
    }

    /// A well-behaved handshake; `unknown` answers `NBD_OPT_GO` with `NBD_REP_ERR_UNKNOWN`.
    async fn handshake(&mut self, flags: u16, unknown: bool) {
        self.s.write_u64(NBD_MAGIC).await.unwrap();
        self.s.write_u64(IHAVEOPT).await.unwrap();
        self.s.write_u16(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).await.unwrap();
        assert_eq!(self.s.read_u32().await.unwrap(), u32::from(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES));
        loop {
            assert_eq!(self.s.read_u64().await.unwrap(), IHAVEOPT);
            let option = self.s.read_u32().await.unwrap();
            let len = self.s.read_u32().await.unwrap();
            let mut data = vec![0; len as usize];
            self.s.read_exact(&mut data).await.unwrap();
            match option {
                OPT_STRUCTURED_REPLY => self.option_reply(option, REP_ACK, &[]).await,
                OPT_SET_META_CONTEXT => {
                    let mut ctx = CONTEXT.to_be_bytes().to_vec();
                    ctx.extend_from_slice(BASE_ALLOCATION.as_bytes());
                    self.option_reply(option, REP_META_CONTEXT, &ctx).await;
                    self.option_reply(option, REP_ACK, &[]).await;
                }
                OPT_GO if unknown => {
                    self.option_reply(option, REP_ERR_UNKNOWN, b"no such export").await;
                    return;
                }
                OPT_GO => {
                    let mut export = INFO_EXPORT.to_be_bytes().to_vec();
                    export.extend_from_slice(&SIZE.to_be_bytes());
                    export.extend_from_slice(&flags.to_be_bytes());
                    self.option_reply(option, REP_INFO, &export).await;
                    let mut sizes = INFO_BLOCK_SIZE.to_be_bytes().to_vec();
                    for v in [512u32, 4096, MAX_BLOCK] {
                        sizes.extend_from_slice(&v.to_be_bytes());
                    }
                    self.option_reply(option, REP_INFO, &sizes).await;
                    self.option_reply(option, REP_ACK, &[]).await;
                    return;
                }
                other => panic!("unexpected option {other}"),
            }
        }
    }

    async fn request(&mut self) -> Req {
        assert_eq!(self.s.read_u32().await.unwrap(), REQUEST_MAGIC);
        let flags = self.s.read_u16().await.unwrap();
        let command = self.s.read_u16().await.unwrap();
        let cookie = self.s.read_u64().await.unwrap();
        let offset = self.s.read_u64().await.unwrap();
        let length = self.s.read_u32().await.unwrap();
        if command == CMD_WRITE {
            let mut data = vec![0; length as usize];
            self.s.read_exact(&mut data).await.unwrap();
        }
        Req { flags, command, cookie, offset, length }
    }

    async fn chunk(&mut self, flags: u16, kind: u16, cookie: u64, payload: &[u8]) {
        let mut out = Vec::new();
        out.extend_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
        out.extend_from_slice(&flags.to_be_bytes());
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&cookie.to_be_bytes());
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(payload);
        self.s.write_all(&out).await.unwrap();
    }

    async fn simple(&mut self, cookie: u64, errno: u32) {
        let mut out = SIMPLE_REPLY_MAGIC.to_be_bytes().to_vec();
        out.extend_from_slice(&errno.to_be_bytes());
        out.extend_from_slice(&cookie.to_be_bytes());
        self.s.write_all(&out).await.unwrap();
    }

    /// The data of `[offset, offset + len)` in this fake's image: a byte pattern.
    fn pattern(offset: u64, len: usize) -> Vec<u8> {
        (0..len as u64).map(|i| ((offset + i) % 251) as u8).collect()
    }

    async fn data(&mut self, cookie: u64, offset: u64, len: usize, done: bool) {
        let mut payload = offset.to_be_bytes().to_vec();
        payload.extend(Self::pattern(offset, len));
        self.chunk(if done { REPLY_FLAG_DONE } else { 0 }, CHUNK_OFFSET_DATA, cookie, &payload).await;
    }
}

async fn pair(flags: u16) -> (NbdClient, Server) {
    let (c, s) = tokio::io::duplex(1 << 16);
    let mut server = Server { s };
    let options = NbdOptions::default();
    let (client, ()) =
        tokio::join!(NbdClient::over(c, "vol", "fake", &options), server.handshake(flags, false));
    (client.unwrap(), server)
}

/// Bounds every call: a hang is a failure too.
async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f).await.expect("the client hung")
}

#[tokio::test]
async fn handshake_reads_size_flags_block_sizes_and_context() {
    let (client, _server) = pair(RW).await;
    let info = client.info();
    assert_eq!((info.size, info.min_block, info.max_block), (SIZE, 512, MAX_BLOCK));
    assert!(info.structured_replies && info.flags.can_write_zeroes() && !info.flags.read_only());
    assert_eq!(info.allocation_context, Some(CONTEXT));
}

#[tokio::test]
async fn a_large_read_is_split_and_reassembled_from_chunks_in_any_order() {
    let (client, mut server) = pair(RW).await;
    let len = (2 * MAX_BLOCK + MAX_BLOCK / 2) as usize;
    let read = tokio::spawn(async move { client.read(4096, vec![0xee; len]).await });
    let mut reqs = Vec::new();
    for _ in 0..3 {
        reqs.push(server.request().await);
    }
    assert!(reqs.iter().all(|r| r.command == CMD_READ && r.length <= MAX_BLOCK));
    assert_eq!(reqs.iter().map(|r| u64::from(r.length)).sum::<u64>(), len as u64);
    // Last request first; its range as a hole then two data chunks, the others whole.
    for r in reqs.iter().rev() {
        let half = u64::from(r.length / 2);
        let mut hole = r.offset.to_be_bytes().to_vec();
        hole.extend_from_slice(&4096u32.to_be_bytes());
        server.chunk(0, CHUNK_OFFSET_HOLE, r.cookie, &hole).await;
        server.data(r.cookie, r.offset + half, (u64::from(r.length) - half) as usize, false).await;
        server.data(r.cookie, r.offset + 4096, (half - 4096) as usize, true).await;
    }
    let buf = within(read).await.unwrap().unwrap();
    for r in &reqs {
        let at = (r.offset - 4096) as usize;
        assert!(buf[at..at + 4096].iter().all(|b| *b == 0), "the hole reads as zeros");
        let rest = &buf[at + 4096..at + r.length as usize];
        assert_eq!(rest, Server::pattern(r.offset + 4096, rest.len()).as_slice());
    }
}

#[tokio::test]
async fn an_error_chunk_fails_that_read_only() {
    let (client, mut server) = pair(RW).await;
    let c = client.clone();
    let read = tokio::spawn(async move { c.read(0, vec![0; 4096]).await });
    let r = server.request().await;
    let mut payload = 5u32.to_be_bytes().to_vec();
    payload.extend_from_slice(&9u16.to_be_bytes());
    payload.extend_from_slice(b"bad block");
    server.chunk(REPLY_FLAG_DONE, CHUNK_ERROR, r.cookie, &payload).await;
    let e = within(read).await.unwrap().unwrap_err().to_string();
    assert!(e.contains("EIO") && e.contains("bad block") && e.contains("read of 4096 bytes at 0"), "{e}");
    // The connection goes on.
    let read = tokio::spawn(async move { client.read(512, vec![0; 512]).await });
    let r = server.request().await;
    server.data(r.cookie, 512, 512, true).await;
    assert_eq!(within(read).await.unwrap().unwrap(), Server::pattern(512, 512));
}

#[tokio::test]
async fn block_status_maps_zero_flags_and_merges() {
    let (client, mut server) = pair(RW).await;
    let status = tokio::spawn(async move { client.block_status(0, SIZE).await });
    let r = server.request().await;
    assert_eq!((r.command, r.offset, u64::from(r.length)), (CMD_BLOCK_STATUS, 0, SIZE));
    let mut payload = CONTEXT.to_be_bytes().to_vec();
    // data 1 MiB, hole+zero 1 MiB, zero 1 MiB, hole only (may hold data) 1 MiB, then past the end.
    for (len, flags) in [(1u32 << 20, 0u32), (1 << 20, 3), (1 << 20, 2), (1 << 20, 1), (8 << 20, 3)] {
        payload.extend_from_slice(&len.to_be_bytes());
        payload.extend_from_slice(&flags.to_be_bytes());
    }
    server.chunk(REPLY_FLAG_DONE, CHUNK_BLOCK_STATUS, r.cookie, &payload).await;
    let extents = within(status).await.unwrap().unwrap();
    let mib = 1u64 << 20;
    assert_eq!(
        extents,
        vec![
            Extent { offset: 0, length: mib, data: true },
            Extent { offset: mib, length: 2 * mib, data: false },
            Extent { offset: 3 * mib, length: mib, data: true },
            Extent { offset: 4 * mib, length: 4 * mib, data: false },
        ]
    );
}

#[tokio::test]
async fn block_status_asks_again_for_what_a_short_answer_left() {
    let (client, mut server) = pair(RW).await;
    let status = tokio::spawn(async move { client.block_status(0, SIZE).await });
    for (offset, flags) in [(0u64, 0u32), (SIZE / 2, 3)] {
        let r = server.request().await;
        assert_eq!(r.offset, offset);
        let mut payload = CONTEXT.to_be_bytes().to_vec();
        payload.extend_from_slice(&((SIZE / 2) as u32).to_be_bytes());
        payload.extend_from_slice(&flags.to_be_bytes());
        server.chunk(REPLY_FLAG_DONE, CHUNK_BLOCK_STATUS, r.cookie, &payload).await;
    }
    let extents = within(status).await.unwrap().unwrap();
    assert_eq!(extents.len(), 2);
    assert_eq!(extents[1], Extent { offset: SIZE / 2, length: SIZE / 2, data: false });
}

#[tokio::test]
async fn writes_zeroes_and_flush_send_the_right_commands() {
    let (client, mut server) = pair(RW).await;
    let c = client.clone();
    let work = tokio::spawn(async move {
        let buf = c.write(0, vec![1; 3 << 20]).await?;
        c.write_zeroes(4 << 20, 1 << 20, true, false).await?;
        c.flush().await?;
        Ok::<_, DriverError>(buf.len())
    });
    for expected in [CMD_WRITE, CMD_WRITE, CMD_WRITE, CMD_WRITE_ZEROES, CMD_FLUSH] {
        let r = server.request().await;
        assert_eq!(r.command, expected);
        if r.command == CMD_WRITE_ZEROES {
            assert_eq!(r.flags & CMD_FLAG_NO_HOLE, 0, "zeroing may punch");
        }
        server.simple(r.cookie, 0).await;
    }
    assert_eq!(within(work).await.unwrap().unwrap(), 3 << 20);
    let e = within(client.write_zeroes(0, 512, true, true)).await.unwrap_err();
    assert_eq!(e.kind(), "not_supported", "{e}");
}

#[tokio::test]
async fn a_read_only_export_refuses_writes_before_sending() {
    let (client, _server) = pair(TF_HAS_FLAGS | TF_READ_ONLY).await;
    let e = within(client.write(0, vec![0; 512])).await.unwrap_err();
    assert!(e.to_string().contains("read-only"), "{e}");
    assert_eq!(e.kind(), "not_supported");
    assert!(within(client.write_zeroes(0, 512, true, false)).await.is_err());
    assert!(within(client.trim(0, 512)).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn a_server_that_never_answers_times_out_and_fails_the_connection() {
    let (c, s) = tokio::io::duplex(1 << 16);
    let mut server = Server { s };
    let options = NbdOptions { request_timeout: Duration::from_secs(60), ..NbdOptions::default() };
    let (client, ()) = tokio::join!(NbdClient::over(c, "vol", "fake", &options), server.handshake(RW, false));
    let client = client.unwrap();
    let c = client.clone();
    let stuck = tokio::spawn(async move { c.read(0, vec![0; 512]).await });
    let r = server.request().await;
    assert_eq!(r.command, CMD_READ);
    let e = stuck.await.unwrap().unwrap_err().to_string();
    assert!(e.contains("no reply within 60s"), "{e}");
    let e = client.read(0, vec![0; 512]).await.unwrap_err().to_string();
    assert!(e.contains("no reply within"), "the connection is given up: {e}");
}

#[tokio::test]
async fn out_of_range_requests_are_refused() {
    let (client, _server) = pair(RW).await;
    let e = within(client.read(SIZE - 512, vec![0; 1024])).await.unwrap_err();
    assert_eq!(e.kind(), "invalid_input", "{e}");
    assert!(within(client.block_status(u64::MAX, 2)).await.is_err());
}

#[tokio::test]
async fn an_unknown_export_is_not_found() {
    let (c, s) = tokio::io::duplex(1 << 16);
    let mut server = Server { s };
    let options = NbdOptions::default();
    let (client, ()) = tokio::join!(NbdClient::over(c, "nope", "fake", &options), server.handshake(RW, true));
    let e = client.unwrap_err();
    assert_eq!(e.kind(), "not_found");
    assert!(e.to_string().contains("nope"), "{e}");
}

/// Malformed replies to a read of 4096 bytes at 0: each breaks the connection with an error.
#[tokio::test]
async fn malformed_replies_fail_the_connection_with_a_message() {
    type Bad = fn(u64) -> Vec<u8>;
    fn header(flags: u16, kind: u16, cookie: u64, len: u32) -> Vec<u8> {
        let mut out = STRUCTURED_REPLY_MAGIC.to_be_bytes().to_vec();
        out.extend_from_slice(&flags.to_be_bytes());
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&cookie.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        out
    }
    let cases: Vec<(&str, Bad)> = vec![
        ("bad magic", |_| vec![0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0]),
        ("unknown cookie", |c| header(1, CHUNK_NONE, c + 99, 0)),
        ("data outside the request", |c| {
            let mut out = header(1, CHUNK_OFFSET_DATA, c, 8 + 16);
            out.extend_from_slice(&8192u64.to_be_bytes());
            out.extend_from_slice(&[0; 16]);
            out
        }),
        ("data overflowing u64", |c| {
            let mut out = header(1, CHUNK_OFFSET_HOLE, c, 12);
            out.extend_from_slice(&u64::MAX.to_be_bytes());
            out.extend_from_slice(&u32::MAX.to_be_bytes());
            out
        }),
        ("none without done", |c| header(0, CHUNK_NONE, c, 0)),
        ("none with payload", |c| header(1, CHUNK_NONE, c, 4)),
        ("huge error chunk", |c| header(1, CHUNK_ERROR, c, u32::MAX)),
        ("block status to a read", |c| header(1, CHUNK_BLOCK_STATUS, c, 12)),
        ("unknown chunk type", |c| header(1, 77, c, 0)),
        ("error message longer than the chunk", |c| {
            let mut out = header(1, CHUNK_ERROR, c, 6);
            out.extend_from_slice(&5u32.to_be_bytes());
            out.extend_from_slice(&100u16.to_be_bytes());
            out
        }),
        ("hole short of the request", |c| {
            let mut out = header(1, CHUNK_OFFSET_HOLE, c, 12);
            out.extend_from_slice(&0u64.to_be_bytes());
            out.extend_from_slice(&512u32.to_be_bytes());
            out
        }),
        ("truncated header", |_| STRUCTURED_REPLY_MAGIC.to_be_bytes()[..3].to_vec()),
        ("truncated data", |c| {
            let mut out = header(1, CHUNK_OFFSET_DATA, c, 8 + 4096);
            out.extend_from_slice(&0u64.to_be_bytes());
            out.extend_from_slice(&[1; 100]);
            out
        }),
    ];
    for (name, bad) in cases {
        let (client, mut server) = pair(RW).await;
        let c = client.clone();
        let read = tokio::spawn(async move { c.read(0, vec![0; 4096]).await });
        let r = server.request().await;
        server.s.write_all(&bad(r.cookie)).await.unwrap();
        drop(server);
        let e = within(read).await.unwrap().expect_err(name).to_string();
        assert!(!e.contains("tasks stopped"), "{name}: {e}");
        assert!(within(client.read(0, vec![0; 512])).await.is_err(), "{name}: the connection is dead");
    }
}

/// A tiny xorshift generator, so the fuzz cases are the same on every run.
fn noise(seed: &mut u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            *seed as u8
        })
        .collect()
}

#[tokio::test]
async fn random_replies_never_panic_or_hang() {
    let mut seed = 0x9e37_79b9_7f4a_7c15;
    for round in 0..200 {
        let (client, mut server) = pair(RW).await;
        let c = client.clone();
        let read = tokio::spawn(async move { c.read(0, vec![0; 4096]).await });
        let r = server.request().await;
        // Half the rounds start with a valid header, so the fuzz reaches the payload checks.
        let mut out = Vec::new();
        if round % 2 == 0 {
            out.extend_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
            out.extend_from_slice(&noise(&mut seed, 4));
            out.extend_from_slice(&r.cookie.to_be_bytes());
            out.extend_from_slice(&((seed % 64) as u32).to_be_bytes());
        }
        let len = (seed % 200) as usize;
        out.extend(noise(&mut seed, len));
        server.s.write_all(&out).await.unwrap();
        drop(server);
        let result = within(read).await.unwrap();
        if let Err(e) = result {
            assert!(!e.to_string().contains("tasks stopped"), "round {round}: {e}");
        }
    }
}

#[tokio::test]
async fn random_and_truncated_handshakes_fail_cleanly() {
    let mut seed = 0x1234_5678_9abc_def1;
    for round in 0..200 {
        let (c, mut s) = tokio::io::duplex(1 << 16);
        let mut greeting = NBD_MAGIC.to_be_bytes().to_vec();
        greeting.extend_from_slice(&IHAVEOPT.to_be_bytes());
        greeting.extend_from_slice(&3u16.to_be_bytes());
        let mut out =
            if round % 2 == 0 { greeting[..(round / 2) % greeting.len()].to_vec() } else { greeting };
        let len = (seed % 300) as usize;
        out.extend(noise(&mut seed, len));
        s.write_all(&out).await.unwrap();
        drop(s);
        let result = within(NbdClient::over(c, "vol", "fake", &NbdOptions::default())).await;
        assert!(result.is_err(), "round {round}");
    }
}

#[test]
fn targets_from_connection_info_and_uris() {
    let info = |data: serde_json::Value| ConnectionInfo {
        driver_volume_type: "nbd".to_owned(),
        data: data.as_object().unwrap().clone(),
    };
    let t = NbdTarget::from_connection_info(&info(serde_json::json!({
        "host": "10.0.0.5", "port": 10811, "export_name": "volume-1", "uri": "ignored"
    })))
    .unwrap();
    assert_eq!(t.address, NbdAddress::Tcp { host: "10.0.0.5".into(), port: 10811 });
    assert_eq!(t.export, "volume-1");
    let t = NbdTarget::from_connection_info(&info(
        serde_json::json!({"socket": "/run/x.sock", "export_name": "e"}),
    ))
    .unwrap();
    assert_eq!(t.address, NbdAddress::Unix("/run/x.sock".into()));
    let t =
        NbdTarget::from_connection_info(&info(serde_json::json!({"uri": "nbd://[::1]:10900/v"}))).unwrap();
    assert_eq!((t.address.to_string(), t.export.as_str()), ("[::1]:10900".to_owned(), "v"));
    let t = NbdTarget::from_uri("nbd+unix:///e?socket=/tmp/s").unwrap();
    assert_eq!(t.address, NbdAddress::Unix("/tmp/s".into()));
    assert_eq!(
        NbdTarget::from_uri("nbd://h/e").unwrap().address,
        NbdAddress::Tcp { host: "h".into(), port: 10809 }
    );
    for bad in [
        serde_json::json!({"host": "h", "port": 70000, "export_name": "e"}),
        serde_json::json!({"host": "h", "export_name": "e"}),
        serde_json::json!({}),
        serde_json::json!({"uri": "iscsi://x"}),
    ] {
        assert_eq!(NbdTarget::from_connection_info(&info(bad)).unwrap_err().kind(), "invalid_input");
    }
    let iscsi = ConnectionInfo { driver_volume_type: "iscsi".into(), data: Default::default() };
    assert!(NbdTarget::from_connection_info(&iscsi).is_err());
}
