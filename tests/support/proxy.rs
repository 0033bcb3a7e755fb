//! `TcpProxy`: a TCP relay the test controls, put between Ember and a server it must not
//! touch (the machine's PostgreSQL, shared with other tests), to play that server's
//! restart or outage: existing connections killed, new ones refused, then served again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// A relay from a local port to `upstream`; everything stops when it is dropped.
pub struct TcpProxy {
    pub port: u16,
    up: Arc<AtomicBool>,
    /// The relayed connections, aborted (both sockets closed) by [`TcpProxy::cut`]; the
    /// lock is never held across an await.
    links: Arc<Mutex<JoinSet<()>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Starts relaying `127.0.0.1:<port>` to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let port = listener.local_addr().expect("the proxy's address").port();
        let up = Arc::new(AtomicBool::new(true));
        let links = Arc::new(Mutex::new(JoinSet::new()));
        let (up2, links2, upstream) = (up.clone(), links.clone(), upstream.to_owned());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { continue };
                if !up2.load(Ordering::SeqCst) {
                    // Refused: closed at once, as a server that is not listening would.
                    drop(client);
                    continue;
                }
                let upstream = upstream.clone();
                let mut set = links2.lock().unwrap();
                while set.try_join_next().is_some() {}
                set.spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&upstream).await else { return };
                    let mut client = client;
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
            }
        });
        Self { port, up, links, accept }
    }

    /// The relayed connection count right now.
    pub fn connections(&self) -> usize {
        self.links.lock().unwrap().len()
    }

    /// The server "goes down": every relayed connection is closed and new ones are refused.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.links.lock().unwrap().abort_all();
    }

    /// The server is back: new connections are relayed again.
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    /// `url` (`scheme://user@host:port/db...`) with its address replaced by the proxy's.
    pub fn rewrite(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
        let (auth, path) = rest.split_once('/').unwrap_or((rest, ""));
        let user = auth.rsplit_once('@').map(|(u, _)| format!("{u}@")).unwrap_or_default();
        format!("{scheme}://{user}127.0.0.1:{}/{path}", self.port)
    }
}

/// `host:port` of `url` (default port 5432).
pub fn address_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |r| r.1);
    let auth = rest.split('/').next().unwrap_or_default();
    let host_port = auth.rsplit_once('@').map_or(auth, |r| r.1);
    if host_port.contains(':') { host_port.to_owned() } else { format!("{host_port}:5432") }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.links.lock().unwrap().abort_all();
    }
}
