//! `quorumkv bench --target echo`: a bare QUIC echo server and its client — the ceiling
//! the store is measured against.
//!
//! It uses exactly what a quorumkv client request uses on the wire — the same quinn
//! endpoint, TLS 1.3 with client certificates from [`crate::tls`], the same transport
//! settings, one bidirectional stream per request closed by each side after its bytes —
//! and nothing else: no decoding, no coordinator, no replicas, no storage. So "quorumkv
//! reaches X% of echo" says how much of the network stack's request rate is left after
//! the store's own work.
//!
//! The server runs on its own thread with its own two-worker tokio runtime, like a node
//! process would, so the benchmark's client runtime does not also have to run it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use quinn::{Connection, Endpoint};

use crate::tls::{self, Role, TlsError, TransportSettings};

/// Errors of the echo server or client.
#[derive(Debug, thiserror::Error)]
pub enum EchoError {
    /// Certificates could not be made or loaded.
    #[error("echo certificates: {0}")]
    Tls(#[from] TlsError),
    /// A socket or runtime could not be set up.
    #[error("echo server setup: {0}")]
    Setup(String),
    /// The connection or a stream failed.
    #[error("echo connection: {0}")]
    Connection(String),
}

/// Largest request echoed (a generous bound on `--value-size` plus the key).
const MAX_ECHO: usize = 32 << 20;

/// The transport settings a node uses by default, so the ceiling has the same stream
/// and idle limits as the store.
fn settings() -> TransportSettings {
    TransportSettings {
        idle: Duration::from_millis(crate::config::Timeouts::default().idle_ms),
        max_streams: crate::config::Limits::default().max_streams_per_connection,
        receive_windows: None,
    }
}

/// A running echo server on loopback. Dropping it stops the server and removes its
/// certificates.
pub struct EchoServer {
    addr: SocketAddr,
    dir: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EchoServer {
    /// Make a throwaway CA, server and client certificates, and start serving on
    /// 127.0.0.1 (an OS-chosen port).
    pub fn start() -> Result<Self, EchoError> {
        let dir = std::env::temp_dir().join(format!(
            "quorumkv-echo-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let ca = tls::ensure_ca(&dir)?;
        let server = tls::issue(
            &dir,
            "echo",
            Role::Node,
            &[loopback],
            tls::DEFAULT_VALIDITY_DAYS,
        )?;
        tls::issue(&dir, "bench", Role::Client, &[], tls::DEFAULT_VALIDITY_DAYS)?;
        let server_cfg = tls::server_config(&ca.cert, &server.cert, &server.key, &settings())?;

        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("echo-server".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                rt.block_on(async move {
                    let endpoint = match Endpoint::server(
                        server_cfg,
                        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
                    )
                    .and_then(|e| e.local_addr().map(|a| (e, a)))
                    {
                        Ok((e, a)) => {
                            let _ = ready_tx.send(Ok(a));
                            e
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e.to_string()));
                            return;
                        }
                    };
                    tokio::select! {
                        _ = serve(endpoint.clone()) => {}
                        _ = stop_rx => {
                            // Tell the clients before the runtime goes away, so they fail
                            // at once instead of at their idle timeout.
                            endpoint.close(0u32.into(), b"bye");
                            let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
                        }
                    }
                });
            })
            .map_err(|e| EchoError::Setup(e.to_string()))?;
        let addr = ready_rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|e| EchoError::Setup(format!("server did not start: {e}")))?
            .map_err(EchoError::Setup)?;
        Ok(EchoServer {
            addr,
            dir,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A client of this server (certificates from the server's throwaway CA).
    pub async fn client(&self) -> Result<EchoClient, EchoError> {
        let cc = tls::client_config(
            &self.dir.join("ca.pem"),
            &self.dir.join("bench.pem"),
            &self.dir.join("bench.key"),
            &settings(),
        )?;
        let mut endpoint = Endpoint::client(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0))
            .map_err(|e| EchoError::Setup(e.to_string()))?;
        endpoint.set_default_client_config(cc);
        let conn =
            crate::transport::quic::connect(&endpoint, self.addr, "echo", Duration::from_secs(5))
                .await
                .map_err(EchoError::Connection)?;
        Ok(EchoClient {
            _endpoint: endpoint,
            conn,
        })
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            // The server thread exits as soon as it sees the stop signal; joining keeps
            // its runtime from outliving the benchmark.
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn serve(endpoint: Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                tokio::spawn(async move {
                    let Ok(bytes) = recv.read_to_end(MAX_ECHO).await else {
                        return;
                    };
                    if send.write_all(&bytes).await.is_ok() {
                        let _ = send.finish();
                    }
                });
            }
        });
    }
}

/// One connection to an echo server; requests run concurrently on it, one stream each.
pub struct EchoClient {
    _endpoint: Endpoint,
    conn: Connection,
}

impl EchoClient {
    /// Send `payload` on a new stream and wait for it to come back.
    pub async fn echo(&self, payload: &[u8]) -> Result<(), EchoError> {
        let back = crate::transport::quic::exchange(&self.conn, payload, MAX_ECHO)
            .await
            .map_err(|e| EchoError::Connection(e.to_string()))?;
        if back.len() != payload.len() {
            return Err(EchoError::Connection(format!(
                "echoed {} bytes for {} sent",
                back.len(),
                payload.len()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Goal: the echo server returns exactly what was sent, for empty, small and large
    /// payloads, concurrently on one connection, and stops when dropped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn echoes_payloads_concurrently() {
        let server = EchoServer::start().expect("start");
        let client = Arc::new(server.client().await.expect("connect"));
        let mut tasks = Vec::new();
        for size in [0usize, 1, 100, 70_000, 1 << 20] {
            let c = Arc::clone(&client);
            tasks.push(tokio::spawn(async move {
                c.echo(&vec![7u8; size]).await.map(|()| size)
            }));
        }
        for t in tasks {
            t.await.expect("task").expect("echo");
        }
        let dir = server.dir.clone();
        drop(server);
        assert!(!dir.exists(), "certificates removed with the server");
        let after = tokio::time::timeout(Duration::from_secs(10), client.echo(b"after stop")).await;
        assert!(
            !matches!(after, Ok(Ok(()))),
            "a stopped server answers nothing"
        );
    }
}
