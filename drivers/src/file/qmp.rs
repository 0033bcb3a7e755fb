//! A small client of QEMU's machine protocol (QMP) over a unix socket, enough to drive a
//! `qemu-storage-daemon`: JSON lines, a greeting, `qmp_capabilities`, then one command
//! at a time answered by `return` or `error` (events in between are skipped).

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

/// How long one command may take: the daemon answers in a millisecond, but a stopped (not
/// dead) one would leave the caller waiting forever.
const DEADLINE: Duration = Duration::from_secs(30);
/// The longest line read: answers listing every export and node of a backend stay far
/// below it, and a runaway peer cannot make this process buffer without bound.
const MAX_LINE: u64 = 16 << 20;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum QmpError {
    /// The socket failed, closed or timed out: the daemon is gone or hung.
    #[error("QMP connection: {0}")]
    Io(#[from] std::io::Error),
    /// The daemon refused the command.
    #[error("{class}: {desc}")]
    Refused { class: String, desc: String },
}

impl QmpError {
    /// Whether the daemon refused with a description containing `text`.
    pub(crate) fn says(&self, text: &str) -> bool {
        matches!(self, QmpError::Refused { desc, .. } if desc.contains(text))
    }
}

/// A QMP session, in command mode.
#[derive(Debug)]
pub(crate) struct Qmp {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    next_id: u64,
}

impl Qmp {
    /// Connects, reads the greeting and leaves capabilities negotiation.
    pub(crate) async fn connect(socket: &Path) -> Result<Qmp, QmpError> {
        let stream = tokio::time::timeout(DEADLINE, UnixStream::connect(socket))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect"))??;
        let (read, writer) = stream.into_split();
        let mut qmp = Qmp { reader: BufReader::new(read), writer, next_id: 0 };
        let greeting = qmp.read_message().await?;
        if greeting.get("QMP").is_none() {
            return Err(invalid(format!("not a QMP greeting: {greeting}")));
        }
        qmp.execute("qmp_capabilities", json!({})).await?;
        Ok(qmp)
    }

    /// Runs one command and returns its `return` value.
    pub(crate) async fn execute(&mut self, command: &str, arguments: Value) -> Result<Value, QmpError> {
        self.next_id += 1;
        let id = self.next_id;
        let mut line = serde_json::to_vec(&json!({ "execute": command, "arguments": arguments, "id": id }))
            .map_err(|e| invalid(e.to_string()))?;
        line.push(b'\n');
        let exchange = async {
            self.writer.write_all(&line).await?;
            loop {
                let message = self.read_message().await?;
                // Events, and answers to commands whose caller gave up, are not ours.
                if message.get("id").and_then(Value::as_u64) != Some(id) {
                    continue;
                }
                if let Some(value) = message.get("return") {
                    return Ok(value.clone());
                }
                let error = &message["error"];
                let text = |k: &str| error[k].as_str().unwrap_or_default().to_owned();
                return Err(QmpError::Refused { class: text("class"), desc: text("desc") });
            }
        };
        match tokio::time::timeout(DEADLINE, exchange).await {
            Ok(result) => result,
            Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, command.to_owned()).into()),
        }
    }

    /// One JSON message (a line).
    async fn read_message(&mut self) -> Result<Value, QmpError> {
        let mut line = String::new();
        let read = (&mut self.reader).take(MAX_LINE).read_line(&mut line).await?;
        if read == 0 {
            return Err(
                std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the daemon closed QMP").into()
            );
        }
        if !line.ends_with('\n') {
            return Err(invalid(format!("a QMP message longer than {MAX_LINE} bytes")));
        }
        serde_json::from_str(&line).map_err(|e| invalid(format!("invalid QMP message: {e}")))
    }
}

fn invalid(message: String) -> QmpError {
    QmpError::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scripted peer: the greeting, then answers (and an event) to what is asked.
    #[tokio::test]
    async fn commands_are_answered_by_id_past_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let peer = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            write.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n").await.unwrap();
            while let Some(line) = lines.next_line().await.unwrap() {
                let asked: Value = serde_json::from_str(&line).unwrap();
                let id = &asked["id"];
                let answer = match asked["execute"].as_str().unwrap() {
                    "qmp_capabilities" => json!({ "return": {}, "id": id }),
                    "bad" => {
                        json!({ "error": { "class": "GenericError", "desc": "no such thing" }, "id": id })
                    }
                    _ => json!({ "return": asked["arguments"], "id": id }),
                };
                let event = json!({ "event": "BLOCK_EXPORT_DELETED", "data": {} });
                write.write_all(format!("{event}\n{answer}\n").as_bytes()).await.unwrap();
            }
        });
        let mut qmp = Qmp::connect(&path).await.unwrap();
        assert_eq!(qmp.execute("echo", json!({ "a": 1 })).await.unwrap(), json!({ "a": 1 }));
        let refused = qmp.execute("bad", json!({})).await.unwrap_err();
        assert!(refused.says("no such thing"), "{refused}");
        drop(qmp);
        peer.await.unwrap();
        // Nobody listening: an I/O error, at once.
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(Qmp::connect(&path).await.unwrap_err(), QmpError::Io(_)));
    }
}
