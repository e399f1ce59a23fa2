//! What a benchmark runs against: a quorumkv cluster, the bare QUIC echo ceiling, or —
//! with the `peers` cargo feature — Redis and etcd, so one workload generator and one
//! histogram code path measure every store side by side.
//!
//! A target offers the four YCSB primitives the driver needs (read, write, scan and the
//! index write that makes scans possible) and classifies its failures into the report's
//! error classes. Keys are the workload's key text: `user<hash>` or, for workload E,
//! `user<hash>/<sort>` where the part before `/` is the partition.
//!
//! How each store maps the primitives (see `docs/BENCHMARKS.md`):
//! * **quorumkv**: `get`/`put` with the remembered causal context, `scan` of a partition.
//! * **echo**: one stream per operation carrying the key (and the value for writes).
//! * **redis**: `GET`/`SET`; workload E also keeps a sorted set per partition (`ZADD` in
//!   the same `MULTI` as the `SET`) and scans with `ZRANGE … BYLEX LIMIT` then `MGET`.
//! * **etcd**: `Range` (linearizable, the default) / `Put`; scans are a `Range` over the
//!   partition's key prefix with a limit.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use super::echo::{EchoClient, EchoServer};
use super::report::ErrorClass;
use crate::client::{Client, ClientError, RequestOptions};
use crate::key::Key;

/// Errors choosing or reaching a target, and failed operations.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// `--target` could not be understood.
    #[error("invalid --target {given:?}: {reason}")]
    Invalid {
        /// What was given.
        given: String,
        /// Why it is refused.
        reason: String,
    },
    /// The target could not be set up or reached before the benchmark started.
    #[error("cannot reach {target}: {message}")]
    Connect {
        /// Which target.
        target: String,
        /// Why.
        message: String,
    },
    /// One operation failed.
    #[error("{message}")]
    Op {
        /// How the report counts it.
        class: ErrorClass,
        /// What happened.
        message: String,
    },
}

impl TargetError {
    /// How the report counts this failure.
    pub fn class(&self) -> ErrorClass {
        match self {
            TargetError::Op { class, .. } => *class,
            TargetError::Connect { .. } => ErrorClass::Unreachable,
            TargetError::Invalid { .. } => ErrorClass::Other,
        }
    }

    fn op(class: ErrorClass, message: impl ToString) -> Self {
        TargetError::Op {
            class,
            message: message.to_string(),
        }
    }
}

impl From<ClientError> for TargetError {
    fn from(e: ClientError) -> Self {
        TargetError::op(ErrorClass::of(&e), e)
    }
}

/// Which store `--target` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    /// The cluster of `--cluster FILE`.
    Quorumkv,
    /// A QUIC echo server the benchmark starts itself on loopback.
    Echo,
    /// `redis://HOST:PORT` (a single Redis server).
    Redis(String),
    /// `etcd://HOST:PORT[,HOST:PORT…]` (the members of one etcd cluster).
    Etcd(Vec<String>),
}

impl TargetSpec {
    /// Short name for reports: `quorumkv`, `echo`, `redis`, `etcd`.
    pub fn name(&self) -> &'static str {
        match self {
            TargetSpec::Quorumkv => "quorumkv",
            TargetSpec::Echo => "echo",
            TargetSpec::Redis(_) => "redis",
            TargetSpec::Etcd(_) => "etcd",
        }
    }
}

impl std::fmt::Display for TargetSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetSpec::Quorumkv | TargetSpec::Echo => f.write_str(self.name()),
            TargetSpec::Redis(url) => f.write_str(url),
            TargetSpec::Etcd(eps) => write!(f, "etcd://{}", eps.join(",")),
        }
    }
}

fn host_port(given: &str, rest: &str) -> Result<(), TargetError> {
    let invalid = |reason: String| TargetError::Invalid {
        given: given.to_string(),
        reason,
    };
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| invalid(format!("{rest:?} is not HOST:PORT")))?;
    if host.is_empty() {
        return Err(invalid(format!("{rest:?} has no host")));
    }
    port.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| invalid(format!("{port:?} is not a port number (1-65535)")))?;
    Ok(())
}

impl FromStr for TargetSpec {
    type Err = TargetError;

    fn from_str(s: &str) -> Result<Self, TargetError> {
        let invalid = |reason: &str| TargetError::Invalid {
            given: s.to_string(),
            reason: reason.to_string(),
        };
        match s {
            "quorumkv" => return Ok(TargetSpec::Quorumkv),
            "echo" => return Ok(TargetSpec::Echo),
            _ => {}
        }
        if let Some(rest) = s.strip_prefix("redis://") {
            host_port(s, rest.trim_end_matches('/'))?;
            return Ok(TargetSpec::Redis(format!(
                "redis://{}/",
                rest.trim_end_matches('/')
            )));
        }
        if let Some(rest) = s.strip_prefix("etcd://") {
            let eps: Vec<String> = rest
                .trim_end_matches('/')
                .split(',')
                .map(|e| e.trim().to_string())
                .collect();
            for e in &eps {
                host_port(s, e)?;
            }
            return Ok(TargetSpec::Etcd(eps));
        }
        Err(invalid(
            "expected quorumkv, echo, redis://HOST:PORT or etcd://HOST:PORT[,HOST:PORT...]",
        ))
    }
}

/// A connected target. Cheap to share between workers: every variant multiplexes
/// concurrent requests over one connection (QUIC streams, Redis pipelining, HTTP/2).
pub enum Target {
    /// A quorumkv cluster.
    Quorumkv {
        /// The client.
        client: Arc<Client>,
        /// Keyspace.
        keyspace: String,
        /// Read quorum override.
        r: Option<u8>,
        /// Write quorum override.
        w: Option<u8>,
    },
    /// The echo ceiling (the server lives as long as the target).
    Echo {
        /// The connection.
        client: EchoClient,
        /// Kept alive for the benchmark.
        _server: EchoServer,
    },
    /// Redis.
    #[cfg(feature = "peers")]
    Redis {
        /// The multiplexed connection (clones share it).
        conn: redis::aio::MultiplexedConnection,
        /// Per-operation timeout.
        timeout: Duration,
    },
    /// etcd.
    #[cfg(feature = "peers")]
    Etcd {
        /// The KV client (clones share the channel); boxed, it is several times larger
        /// than the other variants.
        kv: Box<etcd_client::KvClient>,
        /// Per-operation timeout.
        timeout: Duration,
    },
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything a target needs to connect.
pub struct Connect<'a> {
    /// Which store.
    pub spec: &'a TargetSpec,
    /// For quorumkv: the client of `--cluster`.
    pub client: Option<Arc<Client>>,
    /// For quorumkv: keyspace and quorum overrides.
    pub keyspace: String,
    /// Read quorum override.
    pub r: Option<u8>,
    /// Write quorum override.
    pub w: Option<u8>,
    /// Per-operation timeout for the peers.
    pub timeout: Duration,
}

impl<'a> Connect<'a> {
    /// What a target other than quorumkv needs: where it is and the per-operation timeout.
    pub fn peer(spec: &'a TargetSpec, timeout: Duration) -> Self {
        Connect {
            spec,
            client: None,
            keyspace: String::new(),
            r: None,
            w: None,
            timeout,
        }
    }
}

impl Target {
    /// Connect to the target (for echo: start the server and connect to it).
    pub async fn connect(c: Connect<'_>) -> Result<Target, TargetError> {
        let fail = |message: String| TargetError::Connect {
            target: c.spec.to_string(),
            message,
        };
        match c.spec {
            TargetSpec::Quorumkv => {
                let client = c
                    .client
                    .ok_or_else(|| fail("no quorumkv client (no --cluster file)".into()))?;
                // A cluster none of whose contact points answers is refused here, at once,
                // as the other drivers do: otherwise every operation of the run would wait
                // out its own connection attempts and the benchmark would crawl on for
                // many minutes without a word.
                match tokio::time::timeout(c.timeout, client.ping()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(fail(e.to_string())),
                    Err(_) => {
                        return Err(fail(format!(
                            "no contact point answered a ping within {:?}",
                            c.timeout
                        )))
                    }
                }
                Ok(Target::Quorumkv {
                    client,
                    keyspace: c.keyspace,
                    r: c.r,
                    w: c.w,
                })
            }
            TargetSpec::Echo => {
                let server = EchoServer::start().map_err(|e| fail(e.to_string()))?;
                let client = server.client().await.map_err(|e| fail(e.to_string()))?;
                Ok(Target::Echo {
                    client,
                    _server: server,
                })
            }
            #[cfg(feature = "peers")]
            TargetSpec::Redis(url) => {
                let client = redis::Client::open(url.as_str()).map_err(|e| fail(e.to_string()))?;
                let mut conn = tokio::time::timeout(
                    c.timeout,
                    client.get_multiplexed_async_connection(),
                )
                .await
                .map_err(|_| fail(format!("no connection within {:?}", c.timeout)))?
                .map_err(|e| fail(e.to_string()))?;
                conn.set_response_timeout(c.timeout);
                let _: String = redis::cmd("PING")
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                Ok(Target::Redis {
                    conn,
                    timeout: c.timeout,
                })
            }
            #[cfg(feature = "peers")]
            TargetSpec::Etcd(eps) => {
                let eps: Vec<String> = eps.iter().map(|e| format!("http://{e}")).collect();
                let opts = etcd_client::ConnectOptions::new()
                    .with_connect_timeout(c.timeout)
                    .with_timeout(c.timeout);
                let client = tokio::time::timeout(
                    c.timeout,
                    etcd_client::Client::connect(eps, Some(opts)),
                )
                .await
                .map_err(|_| fail(format!("no connection within {:?}", c.timeout)))?
                .map_err(|e| fail(e.to_string()))?;
                let mut kv = client.kv_client();
                // One round trip now, so a wrong address fails here and not as errors in
                // every operation.
                tokio::time::timeout(c.timeout, kv.get("quorumkv-bench-ping", None))
                    .await
                    .map_err(|_| fail(format!("no answer within {:?}", c.timeout)))?
                    .map_err(|e| fail(e.to_string()))?;
                Ok(Target::Etcd {
                    kv: Box::new(kv),
                    timeout: c.timeout,
                })
            }
            #[cfg(not(feature = "peers"))]
            TargetSpec::Redis(_) | TargetSpec::Etcd(_) => Err(fail(
                "this quorumkv was built without the redis and etcd drivers (--no-default-features); rebuild with the default features".into(),
            )),
        }
    }

    /// Short name of the store.
    pub fn name(&self) -> &'static str {
        match self {
            Target::Quorumkv { .. } => "quorumkv",
            Target::Echo { .. } => "echo",
            #[cfg(feature = "peers")]
            Target::Redis { .. } => "redis",
            #[cfg(feature = "peers")]
            Target::Etcd { .. } => "etcd",
        }
    }

    /// Whether the store hands back causal contexts worth remembering for updates.
    pub fn has_contexts(&self) -> bool {
        matches!(self, Target::Quorumkv { .. })
    }

    fn opts(r: Option<u8>, w: Option<u8>, context: Option<String>) -> RequestOptions {
        RequestOptions {
            r,
            w,
            context,
            ..Default::default()
        }
    }

    /// Read one key; returns the causal context to send with a later write of it (empty
    /// where the store has none). A missing key is a successful read.
    pub async fn read(&self, key: &str) -> Result<String, TargetError> {
        match self {
            Target::Quorumkv {
                client,
                keyspace,
                r,
                w,
            } => Ok(client
                .get(keyspace, Key::parse(key), &Self::opts(*r, *w, None))
                .await?
                .context),
            Target::Echo { client, .. } => {
                client
                    .echo(key.as_bytes())
                    .await
                    .map_err(|e| TargetError::op(ErrorClass::Other, e))?;
                Ok(String::new())
            }
            #[cfg(feature = "peers")]
            Target::Redis { conn, .. } => {
                let _: Option<Vec<u8>> = redis::cmd("GET")
                    .arg(key)
                    .query_async(&mut conn.clone())
                    .await
                    .map_err(redis_error)?;
                Ok(String::new())
            }
            #[cfg(feature = "peers")]
            Target::Etcd { kv, timeout } => {
                etcd_call(*timeout, kv.clone().get(key, None)).await?;
                Ok(String::new())
            }
        }
    }

    /// Write one key (insert or update), with the context of what the writer saw;
    /// returns the new context. Workload E keys (`partition/sort`) are also made
    /// scannable where the store needs an index for that.
    pub async fn write(
        &self,
        key: &str,
        value: Vec<u8>,
        context: Option<String>,
    ) -> Result<String, TargetError> {
        match self {
            Target::Quorumkv {
                client,
                keyspace,
                r,
                w,
            } => Ok(client
                .put(
                    keyspace,
                    Key::parse(key),
                    Some(value),
                    &Self::opts(*r, *w, context),
                )
                .await?
                .context),
            Target::Echo { client, .. } => {
                let mut payload = Vec::with_capacity(key.len() + value.len());
                payload.extend_from_slice(key.as_bytes());
                payload.extend_from_slice(&value);
                client
                    .echo(&payload)
                    .await
                    .map_err(|e| TargetError::op(ErrorClass::Other, e))?;
                Ok(String::new())
            }
            #[cfg(feature = "peers")]
            Target::Redis { conn, .. } => {
                match key.split_once('/') {
                    Some((part, sort)) => {
                        let _: () = redis::pipe()
                            .atomic()
                            .cmd("SET")
                            .arg(key)
                            .arg(value)
                            .ignore()
                            .cmd("ZADD")
                            .arg(format!("idx:{part}"))
                            .arg(0)
                            .arg(sort)
                            .ignore()
                            .query_async(&mut conn.clone())
                            .await
                            .map_err(redis_error)?;
                    }
                    None => {
                        let _: () = redis::cmd("SET")
                            .arg(key)
                            .arg(value)
                            .query_async(&mut conn.clone())
                            .await
                            .map_err(redis_error)?;
                    }
                }
                Ok(String::new())
            }
            #[cfg(feature = "peers")]
            Target::Etcd { kv, timeout } => {
                etcd_call(*timeout, kv.clone().put(key, value, None)).await?;
                Ok(String::new())
            }
        }
    }

    /// Read up to `limit` items of `partition` from sort key `from` on; returns how many
    /// came back.
    pub async fn scan(
        &self,
        partition: &str,
        from: &str,
        limit: u32,
    ) -> Result<usize, TargetError> {
        match self {
            Target::Quorumkv {
                client,
                keyspace,
                r,
                w,
            } => Ok(client
                .scan(
                    keyspace,
                    partition.as_bytes(),
                    from.as_bytes(),
                    None,
                    limit,
                    &Self::opts(*r, *w, None),
                )
                .await?
                .items
                .len()),
            Target::Echo { client, .. } => {
                client
                    .echo(format!("{partition}/{from}").as_bytes())
                    .await
                    .map_err(|e| TargetError::op(ErrorClass::Other, e))?;
                Ok(0)
            }
            #[cfg(feature = "peers")]
            Target::Redis { conn, .. } => {
                let mut conn = conn.clone();
                let sorts: Vec<String> = redis::cmd("ZRANGE")
                    .arg(format!("idx:{partition}"))
                    .arg(format!("[{from}"))
                    .arg("+")
                    .arg("BYLEX")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit)
                    .query_async(&mut conn)
                    .await
                    .map_err(redis_error)?;
                if sorts.is_empty() {
                    return Ok(0);
                }
                let keys: Vec<String> = sorts.iter().map(|s| format!("{partition}/{s}")).collect();
                let values: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
                    .arg(&keys)
                    .query_async(&mut conn)
                    .await
                    .map_err(redis_error)?;
                Ok(values.iter().filter(|v| v.is_some()).count())
            }
            #[cfg(feature = "peers")]
            Target::Etcd { kv, timeout } => {
                // The partition's keys are `partition/…`; '0' is the byte after '/', so
                // the range [partition/from, partition0) is exactly the rest of it.
                let opts = etcd_client::GetOptions::new()
                    .with_range(format!("{partition}0"))
                    .with_limit(i64::from(limit));
                let resp = etcd_call(
                    *timeout,
                    kv.clone().get(format!("{partition}/{from}"), Some(opts)),
                )
                .await?;
                Ok(resp.kvs().len())
            }
        }
    }
}

#[cfg(feature = "peers")]
fn redis_error(e: redis::RedisError) -> TargetError {
    let class = if e.is_timeout() {
        ErrorClass::Timeout
    } else if e.is_connection_refusal() || e.is_connection_dropped() || e.is_io_error() {
        ErrorClass::Unreachable
    } else {
        ErrorClass::Other
    };
    TargetError::op(class, format!("redis: {e}"))
}

#[cfg(feature = "peers")]
async fn etcd_call<T>(
    timeout: Duration,
    call: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, TargetError> {
    match tokio::time::timeout(timeout, call).await {
        Err(_) => Err(TargetError::op(
            ErrorClass::Timeout,
            format!("etcd: no reply within {timeout:?}"),
        )),
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            let class = match &e {
                // gRPC status codes (etcd-client does not re-export tonic's `Code`):
                // 4 = DEADLINE_EXCEEDED, 14 = UNAVAILABLE.
                etcd_client::Error::GRpcStatus(s) if s.code() as i32 == 4 => ErrorClass::Timeout,
                etcd_client::Error::GRpcStatus(s) if s.code() as i32 == 14 => {
                    ErrorClass::Unreachable
                }
                etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => {
                    ErrorClass::Unreachable
                }
                _ => ErrorClass::Other,
            };
            Err(TargetError::op(class, format!("etcd: {e}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: `--target` accepts the four stores and names what is wrong with anything
    /// else.
    #[test]
    fn parses_targets_and_refuses_bad_ones() {
        assert_eq!(
            "quorumkv".parse::<TargetSpec>().unwrap(),
            TargetSpec::Quorumkv
        );
        assert_eq!("echo".parse::<TargetSpec>().unwrap(), TargetSpec::Echo);
        assert_eq!(
            "redis://127.0.0.1:6379".parse::<TargetSpec>().unwrap(),
            TargetSpec::Redis("redis://127.0.0.1:6379/".into())
        );
        assert_eq!(
            "etcd://127.0.0.1:2379,127.0.0.1:22379"
                .parse::<TargetSpec>()
                .unwrap(),
            TargetSpec::Etcd(vec!["127.0.0.1:2379".into(), "127.0.0.1:22379".into()])
        );
        for (bad, says) in [
            ("mysql://x:1", "expected quorumkv"),
            ("redis://localhost", "not HOST:PORT"),
            ("redis://:6379", "no host"),
            ("etcd://a:1,b:notaport", "not a port"),
            ("etcd://a:0", "not a port"),
            ("", "expected quorumkv"),
        ] {
            let e = bad.parse::<TargetSpec>().unwrap_err().to_string();
            assert!(e.contains(says), "{bad:?}: {e}");
            assert!(e.contains("--target"), "{bad:?}: {e}");
        }
    }

    /// Goal: the echo target answers every primitive, so `--target echo` can run any
    /// workload.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn echo_target_answers_every_primitive() {
        let t = Target::connect(Connect::peer(&TargetSpec::Echo, Duration::from_secs(5)))
            .await
            .expect("echo target");
        assert_eq!(t.name(), "echo");
        assert!(!t.has_contexts());
        t.read("user1").await.expect("read");
        t.write("user1", vec![b'x'; 100], None)
            .await
            .expect("write");
        assert_eq!(t.scan("user1", "000001", 10).await.expect("scan"), 0);
    }

    /// Goal: a quorumkv target without a cluster client is refused with a message
    /// naming the cause, not a panic.
    #[tokio::test]
    async fn quorumkv_target_needs_a_client() {
        let e = Target::connect(Connect {
            spec: &TargetSpec::Quorumkv,
            client: None,
            keyspace: "default".into(),
            r: None,
            w: None,
            timeout: Duration::from_secs(1),
        })
        .await
        .unwrap_err();
        assert!(e.to_string().contains("no quorumkv client"), "{e}");
    }
}
