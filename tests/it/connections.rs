//! Slow and idle clients cannot hold connections forever, and a full house still lets a
//! health check in (issue #12). Told over raw TCP, since an HTTP client would hide the socket.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::on_both_engines;
use crate::support::{Engine, TestApp};

on_both_engines!(
    a_half_sent_request_is_closed_after_the_header_timeout,
    an_idle_kept_alive_connection_is_closed,
    a_full_house_closes_idle_connections_for_a_health_check,
    over_the_cap_a_connection_waits_for_a_place,
);

/// Longer than any timeout these stories set: a connection still open after this is held
/// forever, for the test's purpose.
const FOREVER: Duration = Duration::from_secs(15);

/// Reads until the server closes the connection; `true` if it did within `FOREVER`.
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    let read_to_end = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(FOREVER, read_to_end).await.is_ok()
}

/// Whether the server has closed the connection already, without waiting for it to.
async fn already_closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1];
    matches!(tokio::time::timeout(Duration::from_millis(50), stream.read(&mut buf)).await, Ok(Ok(0) | Err(_)))
}

/// One request on a kept-alive connection; returns the response head.
async fn request(stream: &mut TcpStream, path: &str) -> String {
    let head = format!("GET {path} HTTP/1.1\r\nhost: pipepay.test\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // Every answer these stories ask for is small and has a content-length.
    while !response_complete(&got) {
        let n = tokio::time::timeout(FOREVER, stream.read(&mut buf)).await.expect("an answer").unwrap();
        assert!(n > 0, "closed before answering: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

fn response_complete(got: &[u8]) -> bool {
    let text = String::from_utf8_lossy(got);
    let Some((head, body)) = text.split_once("\r\n\r\n") else { return false };
    let length = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    body.len() >= length
}

async fn half_sent(app: &TestApp) -> TcpStream {
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(b"GET /readyz HTTP/1.1\r\nhost: pipepay.test\r\nx-slow: ").await.unwrap();
    stream
}

async fn a_half_sent_request_is_closed_after_the_header_timeout(engine: Engine) {
    let app = TestApp::spawn_with(engine, &["--header-read-timeout", "1"]).await;
    let mut slow = half_sent(&app).await;
    let mut silent = TcpStream::connect(app.addr).await.unwrap();
    assert!(closed_by_server(&mut slow).await, "a half-sent request holds its socket");
    assert!(closed_by_server(&mut silent).await, "a connection that sends nothing holds its socket");
    // The timeout is about slow heads, not about the requests that follow them.
    let mut quick = TcpStream::connect(app.addr).await.unwrap();
    assert!(request(&mut quick, "/readyz").await.starts_with("HTTP/1.1 200"));
    app.stop().await;
}

async fn an_idle_kept_alive_connection_is_closed(engine: Engine) {
    let app = TestApp::spawn_with(engine, &["--idle-timeout", "1"]).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    assert!(request(&mut stream, "/healthz").await.starts_with("HTTP/1.1 200"));
    assert!(
        request(&mut stream, "/healthz").await.starts_with("HTTP/1.1 200"),
        "kept alive between requests"
    );
    assert!(closed_by_server(&mut stream).await, "an idle connection is kept forever");
    app.stop().await;
}

async fn a_full_house_closes_idle_connections_for_a_health_check(engine: Engine) {
    let app = TestApp::spawn_with(engine, &["--max-connections", "3", "--idle-timeout", "600"]).await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        assert!(request(&mut stream, "/healthz").await.starts_with("HTTP/1.1 200"));
        idle.push(stream);
    }
    let mut probe = TcpStream::connect(app.addr).await.unwrap();
    assert!(request(&mut probe, "/readyz").await.starts_with("HTTP/1.1 200"));
    let mut closed = 0;
    for stream in &mut idle {
        closed += usize::from(already_closed(stream).await);
    }
    assert!(closed >= 1, "the probe got in without an idle connection making room");
    app.stop().await;
}

async fn over_the_cap_a_connection_waits_for_a_place(engine: Engine) {
    let app = TestApp::spawn_with(engine, &["--max-connections", "2", "--header-read-timeout", "2"]).await;
    let mut slow = [half_sent(&app).await, half_sent(&app).await];
    let mut probe = TcpStream::connect(app.addr).await.unwrap();
    assert!(request(&mut probe, "/readyz").await.starts_with("HTTP/1.1 200"));
    // The probe was answered only once a slow client's place was freed, never as a third.
    let mut closed = 0;
    for stream in &mut slow {
        closed += usize::from(already_closed(stream).await);
    }
    assert!(closed >= 1, "a third connection was served next to two held ones");
    app.stop().await;
}
