//! Real nodes — QUIC with mutual TLS, RocksDB, the client library — on loopback in one
//! process: the foundation's end-to-end behaviour, restarts and hostile input.

mod common;

use std::time::Duration;

use common::{
    client, client_of, eventually, object_values, raw_endpoint, rocksdb_storage, running_node,
    short_timeouts, three_nodes, values,
};
use quorumkv::client::{Client, ClientError, RequestOptions};
use quorumkv::config::{ClusterFile, StorageConfig};
use quorumkv::inprocess::QuicCluster;
use quorumkv::key::Key;
use quorumkv::keyspace::KeyspaceDef;
use quorumkv::proto::{self, ErrorKind};

/// Three RocksDB nodes on loopback with keyspace `ks` (N=3 R=2 W=2), the shape most
/// tests here use.
async fn cluster(dir: &std::path::Path) -> QuicCluster {
    three_nodes(dir, "ks", rocksdb_storage(true), short_timeouts()).await
}

fn opts() -> RequestOptions {
    RequestOptions::default()
}

/// Goal: when every contact point is down, concurrent requests all fail within about
/// one round of connection attempts — requests waiting for the connection take the
/// failure of the round in progress instead of each running their own, one after the
/// other (which kept `quorumkv bench` against a stopped cluster busy for minutes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_cluster_fails_concurrent_requests_together() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cluster(dir.path()).await;
    let client = client(&c);
    for i in 0..3 {
        c.stop(i).await;
    }
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let client = std::sync::Arc::clone(&client);
        tasks.push(tokio::spawn(async move {
            client
                .get("ks", Key::parse(&format!("k{i}")), &opts())
                .await
        }));
    }
    for t in tasks {
        let e = t.await.unwrap().unwrap_err();
        assert!(matches!(e, ClientError::Unreachable(_)), "{e}");
    }
    // One round is 3 contacts × the 3 s connect timeout (the cluster file's 3 s client
    // timeout, capped at 3 s) = 9 s; 16 rounds one after the other would be 144 s.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(15), "took {took:?}");
    c.shutdown().await;
}

/// Goal: over real QUIC and RocksDB, put/get/delete work through any node; with one of
/// three nodes down W=2 still succeeds; with two down it fails with the typed quorum error;
/// concurrent writes give siblings and a context write collapses them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cluster(dir.path()).await;
    let k = || Key::parse("user:1");
    client_of(&c, 0)
        .put("ks", k(), Some(b"alice".to_vec()), &opts())
        .await
        .unwrap();
    for i in 0..3 {
        assert_eq!(
            values(&client_of(&c, i).get("ks", k(), &opts()).await.unwrap()),
            vec!["alice"]
        );
    }
    // Concurrent blind writes through two coordinators: siblings.
    let (c1, c2) = (client_of(&c, 1), client_of(&c, 2));
    let o = opts();
    let (a, b) = tokio::join!(
        c1.put("ks", Key::parse("post"), Some(b"eu".to_vec()), &o),
        c2.put("ks", Key::parse("post"), Some(b"us".to_vec()), &o)
    );
    a.unwrap();
    b.unwrap();
    let all = RequestOptions {
        r: Some(3),
        ..opts()
    };
    let g = client(&c)
        .get("ks", Key::parse("post"), &all)
        .await
        .unwrap();
    assert_eq!(values(&g), vec!["eu", "us"]);
    let ctx = RequestOptions {
        context: Some(g.context.clone()),
        ..opts()
    };
    client(&c)
        .put("ks", Key::parse("post"), Some(b"merged".to_vec()), &ctx)
        .await
        .unwrap();
    assert_eq!(
        values(
            &client(&c)
                .get("ks", Key::parse("post"), &all)
                .await
                .unwrap()
        ),
        vec!["merged"]
    );
    // Delete with context.
    let g = client(&c).get("ks", k(), &opts()).await.unwrap();
    client(&c)
        .delete(
            "ks",
            k(),
            &RequestOptions {
                context: Some(g.context),
                ..opts()
            },
        )
        .await
        .unwrap();
    assert!(client(&c)
        .get("ks", k(), &all)
        .await
        .unwrap()
        .values
        .is_empty());

    // One node down: W=2 and R=2 still work.
    c.stop(2).await;
    client_of(&c, 0)
        .put("ks", Key::parse("k2"), Some(b"v".to_vec()), &opts())
        .await
        .expect("W=2 with one node down");
    assert_eq!(
        values(
            &client_of(&c, 1)
                .get("ks", Key::parse("k2"), &opts())
                .await
                .unwrap()
        ),
        vec!["v"]
    );
    // Two down: typed quorum error naming the failures.
    c.stop(1).await;
    let e = client_of(&c, 0)
        .put("ks", Key::parse("k3"), Some(b"v".to_vec()), &opts())
        .await
        .unwrap_err();
    match &e {
        ClientError::Server {
            kind:
                ErrorKind::QuorumNotReached {
                    needed: 2,
                    got: 1,
                    failures,
                },
            message,
        } => {
            let mut nodes: Vec<_> = failures.iter().map(|f| f.node.as_str()).collect();
            nodes.sort();
            assert_eq!(nodes, vec!["n2", "n3"], "{message}");
        }
        other => panic!("expected a quorum error, got {other:?}"),
    }
    c.shutdown().await;
}

/// Goal: read repair over QUIC fixes a replica that was down during a write, and a node
/// restarted on its RocksDB directory serves what it had acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_and_read_repair() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cluster(dir.path()).await;
    let all = RequestOptions {
        w: Some(3),
        ..opts()
    };
    for i in 0..50 {
        client(&c)
            .put(
                "ks",
                Key::parse(&format!("k{i}")),
                Some(format!("v{i}").into_bytes()),
                &all,
            )
            .await
            .unwrap();
    }
    // Restart every node: RocksDB must give back every acknowledged write.
    for i in 0..3 {
        c.restart(i).await.unwrap();
    }
    for i in 0..50 {
        let g = client_of(&c, i % 3)
            .get(
                "ks",
                Key::parse(&format!("k{i}")),
                &RequestOptions {
                    r: Some(3),
                    ..opts()
                },
            )
            .await
            .unwrap();
        assert_eq!(values(&g), vec![format!("v{i}")]);
    }
    // n3 misses an update while down; a read repairs it.
    c.stop(2).await;
    let g = client_of(&c, 0)
        .get("ks", Key::parse("k0"), &opts())
        .await
        .unwrap();
    client_of(&c, 0)
        .put(
            "ks",
            Key::parse("k0"),
            Some(b"new".to_vec()),
            &RequestOptions {
                context: Some(g.context),
                ..opts()
            },
        )
        .await
        .unwrap();
    c.restart(2).await.unwrap();
    let n3 = running_node(&c, 2);
    let stale = n3.local_object("ks", &Key::parse("k0")).await.unwrap();
    assert_eq!(
        stale.live_values().next().unwrap().value.as_deref(),
        Some(&b"v0"[..])
    );
    let g = client_of(&c, 0)
        .get(
            "ks",
            Key::parse("k0"),
            &RequestOptions {
                r: Some(3),
                ..opts()
            },
        )
        .await
        .unwrap();
    assert_eq!(values(&g), vec!["new"]);
    let n3 = &n3;
    eventually(
        "read repair to reach n3",
        Duration::from_millis(2500),
        Duration::from_millis(50),
        move || async move {
            let o = n3.local_object("ks", &Key::parse("k0")).await.unwrap();
            let v = object_values(&o);
            if v == ["new"] {
                Ok(())
            } else {
                Err(format!("n3 holds {v:?}"))
            }
        },
    )
    .await;
    c.shutdown().await;
}

/// Goal: a 5-node cluster with N=4 W=2 over QUIC keeps serving with two nodes down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_n4_w2_over_quic() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = QuicCluster::start(
        dir.path(),
        5,
        &[KeyspaceDef::new("ks", 4, 2, 2)],
        rocksdb_storage(true),
        short_timeouts(),
    )
    .await
    .unwrap();
    for i in 0..20 {
        client(&c)
            .put(
                "ks",
                Key::parse(&format!("k{i}")),
                Some(b"v".to_vec()),
                &opts(),
            )
            .await
            .unwrap();
    }
    let pl = client(&c).replicas("ks", Key::parse("k0")).await.unwrap();
    assert_eq!(pl.len(), 4);
    let idx = |n: &str| n[1..].parse::<usize>().unwrap() - 1;
    c.stop(idx(&pl[0])).await;
    c.stop(idx(&pl[1])).await;
    let survivor = idx(&pl[2]);
    assert_eq!(
        values(
            &client_of(&c, survivor)
                .get("ks", Key::parse("k0"), &opts())
                .await
                .unwrap()
        ),
        vec!["v"]
    );
    client_of(&c, survivor)
        .put("ks", Key::parse("k0"), Some(b"w".to_vec()), &opts())
        .await
        .unwrap();
    c.shutdown().await;
}

/// Goal: a garbage frame and an over-limit frame are refused on their own stream, with
/// an error reply naming the problem, while a request sent concurrently on the same
/// connection and one sent after them are served: one bad frame no longer closes the
/// whole connection. A client certificate cannot send peer (replica) messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_contained() {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(dir.path()).await;
    let cf = ClusterFile::load(&c.cluster_file).unwrap();
    let ep = raw_endpoint(
        &cf.ca_cert,
        &cf.client_cert,
        &cf.client_key,
        Duration::from_secs(5),
        8,
    );
    let target = &cf.contact_points[0];
    let max = c.configs[0].limits.max_frame_bytes;
    let conn =
        quorumkv::transport::quic::connect(&ep, target.addr, &target.name, Duration::from_secs(2))
            .await
            .unwrap();
    let error_of = |r: Result<Vec<u8>, quorumkv::transport::quic::ExchangeError>| match r {
        Ok(bytes) => match proto::decode::<proto::Reply>(&bytes, 1 << 20) {
            Ok(proto::Reply::Client(proto::ClientResponse::Error(e))) => e,
            other => panic!("expected an error reply, got {other:?}"),
        },
        Err(e) => panic!("expected an error reply on the stream, got {e}"),
    };
    let ping = proto::encode(&proto::Message::Client(proto::ClientRequest::Ping));
    let big = vec![0u8; max + 1];
    let (garbage, oversize, concurrent) = tokio::join!(
        quorumkv::transport::quic::exchange(&conn, b"\x00\x01garbage, not a frame", 1 << 20),
        quorumkv::transport::quic::exchange(&conn, &big, 1 << 20),
        quorumkv::transport::quic::exchange(&conn, &ping, 1 << 20),
    );
    let e = error_of(garbage);
    assert_eq!(e.kind, ErrorKind::InvalidRequest, "{e:?}");
    assert!(e.message.contains("malformed"), "{}", e.message);
    let e = error_of(oversize);
    assert_eq!(e.kind, ErrorKind::InvalidRequest, "{e:?}");
    assert!(e.message.contains("too large"), "{}", e.message);
    let pong = |r: Result<Vec<u8>, quorumkv::transport::quic::ExchangeError>| match proto::decode::<
        proto::Reply,
    >(
        &r.expect("ping on the same connection"),
        1 << 20,
    ) {
        Ok(proto::Reply::Client(proto::ClientResponse::Pong(n))) => n,
        other => panic!("expected pong, got {other:?}"),
    };
    assert_eq!(pong(concurrent), "n1");
    // Later requests on the same connection still work.
    assert!(conn.close_reason().is_none(), "{:?}", conn.close_reason());
    assert_eq!(
        pong(quorumkv::transport::quic::exchange(&conn, &ping, 1 << 20).await),
        "n1"
    );

    // A client (here: admin) certificate sending a replica message is refused when the
    // frame is decoded, before the peer body is read: an error on that stream alone, which
    // says why, and the connection goes on serving client requests.
    let frame = proto::encode(&proto::Message::Peer {
        from: "n2".into(),
        req: proto::PeerRequest::Ping,
    });
    let r = quorumkv::transport::quic::exchange(&conn, &frame, 1 << 20)
        .await
        .expect("an error reply on the stream");
    match proto::decode::<proto::Reply>(&r, 1 << 20) {
        Ok(proto::Reply::Client(proto::ClientResponse::Error(e))) => assert!(
            e.message.contains("only from node certificates"),
            "{}",
            e.message
        ),
        other => panic!("client cert must not speak for a node: {other:?}"),
    }
    assert_eq!(
        pong(quorumkv::transport::quic::exchange(&conn, &ping, 1 << 20).await),
        "n1"
    );

    // The node still serves everyone else.
    client_of(&c, 0)
        .put("ks", Key::parse("after"), Some(b"fine".to_vec()), &opts())
        .await
        .unwrap();
    assert_eq!(
        values(
            &client_of(&c, 0)
                .get("ks", Key::parse("after"), &opts())
                .await
                .unwrap()
        ),
        vec!["fine"]
    );
    c.shutdown().await;
}

/// Goal: a certificate from another CA is rejected at the TLS handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_certificate_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(dir.path()).await;
    let other = tempfile::tempdir().unwrap();
    let foreign = quorumkv::tls::issue(
        other.path(),
        "mallory",
        quorumkv::tls::Role::Client,
        &[],
        30,
    )
    .unwrap();
    let mut cf = ClusterFile::load(&c.cluster_file).unwrap();
    cf.client_cert = foreign.cert;
    cf.client_key = foreign.key;
    cf.timeout_ms = 1000;
    let e = Client::new(&cf).unwrap().ping().await.unwrap_err();
    assert!(
        matches!(
            e,
            ClientError::Unreachable(_) | ClientError::Indeterminate { .. }
        ),
        "{e:?}"
    );
    c.shutdown().await;
}

/// Goal: the client moves to the next contact point when the first is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_fails_over_between_contact_points() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cluster(dir.path()).await;
    let cl = client(&c);
    assert_eq!(cl.ping().await.unwrap(), "n1");
    c.stop(0).await;
    let name = cl.ping().await.unwrap();
    assert_ne!(name, "n1");
    cl.put("ks", Key::parse("x"), Some(b"y".to_vec()), &opts())
        .await
        .unwrap();
    c.shutdown().await;
}

/// Wait until n1's `status` reports `node` in `state`: at most 10 s, polled every 250 ms.
async fn reports_state(c: &QuicCluster, node: &str, state: &str) {
    eventually(
        &format!("n1 to report {node} {state}"),
        Duration::from_secs(10),
        Duration::from_millis(250),
        move || async move {
            let (_, nodes) = client_of(c, 0).status().await.unwrap();
            if nodes.iter().any(|s| s.name == node && s.state == state) {
                Ok(())
            } else {
                Err(format!("{nodes:?}"))
            }
        },
    )
    .await;
}

/// Goal: `status` reports a stopped node as down (learnt by the node's periodic probe,
/// without any client request touching it) and reports it up again after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_down_node() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cluster(dir.path()).await;
    c.stop(2).await;
    reports_state(&c, "n3", "down").await;
    c.restart(2).await.unwrap();
    reports_state(&c, "n3", "up").await;
    c.shutdown().await;
}

/// Goal: each node serves Prometheus text at `/metrics`: a scrape after real traffic
/// shows coordinator latency summaries and request counts for the operations done,
/// replica-side latencies, read repairs and quorum failures; other paths get 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_is_scraped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let mut c = cluster(dir.path()).await;
    let n1 = client_of(&c, 0);
    for i in 0..5 {
        n1.put(
            "ks",
            Key::parse(&format!("k{i}")),
            Some(b"v".to_vec()),
            &opts(),
        )
        .await
        .unwrap();
        n1.get("ks", Key::parse(&format!("k{i}")), &opts())
            .await
            .unwrap();
    }
    c.stop(2).await;
    c.stop(1).await;
    let _ = n1
        .put("ks", Key::parse("x"), Some(b"v".to_vec()), &opts())
        .await
        .unwrap_err();
    let scrape = |path: &'static str| {
        let addr = c.nodes[0]
            .as_ref()
            .unwrap()
            .metrics_addr
            .expect("metrics enabled");
        async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut body = String::new();
            s.read_to_string(&mut body).await.unwrap();
            body
        }
    };
    let text = scrape("/metrics").await;
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(text.contains("# TYPE quorumkv_coordinator_latency_seconds summary"));
    assert!(
        text.contains("quorumkv_requests_total{node=\"n1\",op=\"get\"} 5"),
        "{text}"
    );
    assert!(
        text.contains("quorumkv_requests_total{node=\"n1\",op=\"put\"} 6"),
        "{text}"
    );
    assert!(
        text.contains("quorumkv_quorum_failures_total{node=\"n1\",op=\"put\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("quorumkv_coordinator_latency_seconds_count{node=\"n1\",op=\"get\"} 5"),
        "{text}"
    );
    let replica_writes = text
        .lines()
        .find(|l| l.starts_with("quorumkv_replica_latency_seconds_count{node=\"n1\",op=\"write\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap();
    assert!(
        replica_writes >= 6,
        "n1 leads the writes it coordinates: {replica_writes}"
    );
    assert!(text.contains("quorumkv_requests_inflight{node=\"n1\"} 0"));
    // Six puts of one byte (the sixth, refused for lack of a quorum, is sized when it
    // arrives) and five reads of one byte each.
    assert!(
        text.contains("quorumkv_object_size_bytes_count{node=\"n1\",op=\"write\"} 6"),
        "{text}"
    );
    assert!(
        text.contains("quorumkv_object_size_bytes{node=\"n1\",op=\"read\",quantile=\"1\"} 1"),
        "{text}"
    );
    assert!(scrape("/nope").await.starts_with("HTTP/1.1 404"));
    c.shutdown().await;
}

fn forbidden(e: ClientError) -> String {
    match e {
        ClientError::Server {
            kind: ErrorKind::Forbidden,
            message,
        } => message,
        other => panic!("expected Forbidden, got {other:?}"),
    }
}

/// Goal: over real QUIC and certificates, a client certificate cannot create or drop
/// keyspaces (an admin can); keyspace grants decide which client names may read and
/// write, with errors naming the client, the keyspace and the permission; a keyspace
/// without grants stays open to every client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_authorized_by_role_and_grants() {
    use quorumkv::inprocess::client_file;
    use quorumkv::tls::Role;
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(dir.path()).await;
    let admin = client(&c);
    let as_client = |name: &str| {
        let f = client_file(&c.cluster_file, name, Role::Client).unwrap();
        Client::new(&ClusterFile::load(&f).unwrap()).unwrap()
    };
    let (alice, bob, carol) = (as_client("alice"), as_client("bob"), as_client("carol"));

    let mut orders = KeyspaceDef::new("orders", 3, 2, 2);
    orders.readers = Some(vec!["alice".into(), "bob".into()]);
    orders.writers = Some(vec!["alice".into()]);
    let m = forbidden(alice.create_keyspace(orders.clone()).await.unwrap_err());
    assert!(
        m.contains("\"alice\"") && m.contains("admin") && m.contains("\"orders\""),
        "{m}"
    );
    assert!(admin
        .keyspaces()
        .await
        .unwrap()
        .iter()
        .all(|k| k.name != "orders"));
    admin.create_keyspace(orders).await.unwrap();

    let k = || Key::parse("o1");
    let v = || Some(b"paid".to_vec());
    alice.put("orders", k(), v(), &opts()).await.unwrap();
    let m = forbidden(bob.put("orders", k(), v(), &opts()).await.unwrap_err());
    assert!(
        m.contains("\"bob\"") && m.contains("write") && m.contains("\"orders\""),
        "{m}"
    );
    assert_eq!(
        values(&bob.get("orders", k(), &opts()).await.unwrap()),
        vec!["paid"]
    );
    let m = forbidden(carol.get("orders", k(), &opts()).await.unwrap_err());
    assert!(m.contains("\"carol\"") && m.contains("read"), "{m}");
    // Admins are not limited by grants; keyspaces without grants are open.
    admin.put("orders", k(), v(), &opts()).await.unwrap();
    carol.put("ks", k(), v(), &opts()).await.unwrap();
    carol.get("ks", k(), &opts()).await.unwrap();

    let m = forbidden(alice.drop_keyspace("orders").await.unwrap_err());
    assert!(m.contains("drop") && m.contains("admin"), "{m}");
    let (acked, missing) = admin.drop_keyspace("orders").await.unwrap();
    assert_eq!((acked.len(), missing.len()), (3, 0), "{missing:?}");
    c.shutdown().await;
}

/// Goal: a node whose certificate expires within 30 days starts, with a warning naming
/// the certificate and the days left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_warns_when_its_certificate_expires_soon() {
    let dir = tempfile::tempdir().unwrap();
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    let (configs, _) = quorumkv::inprocess::write_cluster_files(
        dir.path(),
        &[addr],
        &[],
        StorageConfig {
            engine: "memory".into(),
            sync: false,
            overlap_lead_sync: false,
        },
        short_timeouts(),
    )
    .unwrap();
    let mut cfg = configs[0].clone();
    cfg.metrics_listen = None;
    let certs = cfg.tls.cert.parent().unwrap().to_path_buf();
    let renewed =
        quorumkv::tls::issue(&certs, "n1", quorumkv::tls::Role::Node, &[addr.ip()], 10).unwrap();
    assert!(renewed.reused_key);
    let node = quorumkv::runtime::start(&cfg, Some(sock)).await.unwrap();
    let w = node.warnings.join("\n");
    assert!(
        (w.contains("expires in 9 day") || w.contains("expires in 10 day")) && w.contains("n1.pem"),
        "{w}"
    );
    node.shutdown().await;
}
