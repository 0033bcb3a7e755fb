//! The application served on a real loopback socket, spoken to in plain HTTP/1.1.

mod common;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::Harness;

/// Sends one request with `Connection: close` and returns the status code and JSON body.
async fn exchange(addr: std::net::SocketAddr, request: String) -> (u16, Value) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn creates_and_lists_over_a_real_socket() {
    let h = Harness::sqlite().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(axum::serve(listener, h.app.clone()).into_future());

    let body = r#"{"volume": {"size": 1, "name": "over-the-wire"}}"#;
    let create = format!(
        "POST /v3/p1/volumes HTTP/1.1\r\nHost: {addr}\r\nX-Auth-Token: u:p1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, created) = exchange(addr, create).await;
    assert_eq!(status, 202, "{created}");
    assert_eq!(
        created["volume"]["links"][0]["href"].as_str().unwrap().split("/v3/").next().unwrap(),
        format!("http://{addr}")
    );
    let list = format!(
        "GET /v3/p1/volumes HTTP/1.1\r\nHost: {addr}\r\nX-Auth-Token: u:p1\r\nConnection: close\r\n\r\n"
    );
    let (status, listed) = exchange(addr, list).await;
    assert_eq!((status, &listed["volumes"][0]["name"]), (200, &Value::from("over-the-wire")));
    server.abort();
    h.cleanup().await;
}
