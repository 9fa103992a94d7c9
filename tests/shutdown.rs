//! SIGTERM lets in-flight requests finish. In a test binary of its own, because the signal
//! goes to the whole test process.
// A failed unwrap is how a test says what went wrong; the crate lints are for src/.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use axum::routing::get;
use clap::Parser;
use pipepay::cli::Cli;
use pipepay::{http, shutdown};
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_slow_request_lets_it_finish() {
    let config = Cli::try_parse_from(["pipepay"]).unwrap().config;
    let routes = axum::Router::new().route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            "finished"
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(http::serve(
        listener,
        http::with_middleware(routes, &config),
        shutdown::signal(),
        Duration::from_secs(10),
    ));

    pipepay::install_tls_provider();
    let slow = tokio::spawn(reqwest::get(format!("http://{addr}/slow")));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = Instant::now();
    // SAFETY: signalling our own process; pipepay's handler is installed, so it does not die.
    unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };

    let response = slow.await.unwrap().expect("the in-flight request is answered");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "finished");

    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server stops once the request is done")
        .unwrap()
        .unwrap();
    assert!(signalled.elapsed() >= Duration::from_millis(1000), "it waited for the request");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "no new connections after shutdown");
}
