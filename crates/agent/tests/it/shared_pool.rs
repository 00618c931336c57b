//! A connection pool shared by many simulated agents ([`SharedPool`]): with `max_idle` set, a
//! burst of concurrent requests leaves at most that many connections open once answered (the
//! fleet simulator relies on it when its fleet does not fit the open-file limit).

use std::sync::Arc;
use std::time::Duration;

use apollo_agent::client::{SharedPool, http_client_from};
use bytes::Bytes;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

const BURST: usize = 48;
const MAX_IDLE: usize = 4;

/// An HTTP/1.1 server that holds every answer until `BURST` connections are open (so the
/// client must open that many) and publishes how many connections are open (counted in the
/// watch itself, so no update can overtake another).
async fn counting_server() -> (std::net::SocketAddr, watch::Receiver<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = watch::channel(0usize);
    let tx = Arc::new(tx);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tx.send_modify(|open| *open += 1);
            tokio::spawn(async move {
                let mut burst = tx.subscribe();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                loop {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        // Every request of the burst waits until the burst has its connections.
                        if burst.wait_for(|&n| n >= BURST).await.is_err() {
                            return;
                        }
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                        if stream.write_all(answer).await.is_err() {
                            break;
                        }
                    }
                }
                tx.send_modify(|open| *open -= 1);
            });
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn a_bounded_shared_pool_closes_what_it_does_not_keep_idle() {
    let (addr, mut open) = counting_server().await;
    let pool = SharedPool {
        local_address: None,
        max_idle: Some(MAX_IDLE),
    };
    let http = http_client_from(Duration::from_secs(5), &pool);
    let requests = (0..BURST).map(|_| {
        let http = http.clone();
        let uri = format!("http://{addr}/");
        async move {
            let request = http::Request::get(uri)
                .body(Full::new(Bytes::new()))
                .unwrap();
            http.request(request).await.map(|r| r.status())
        }
    });
    let answers =
        tokio::time::timeout(Duration::from_secs(10), futures::future::join_all(requests))
            .await
            .expect("the burst is answered");
    assert!(answers.iter().all(|a| matches!(a, Ok(s) if s.is_success())));
    // Unbounded, all of them would stay open for the 90 s idle timeout.
    tokio::time::timeout(Duration::from_secs(10), open.wait_for(|&n| n <= MAX_IDLE))
        .await
        .expect("connections beyond max_idle are closed once answered")
        .unwrap();
}
