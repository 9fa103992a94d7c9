//! An SMTP server on loopback that keeps what it is sent, and can refuse the next mails with a
//! temporary failure (451), as a busy relay does.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone)]
pub struct Mail {
    pub to: Vec<String>,
    /// The message as sent (headers and body; quoted-printable lines joined back).
    pub data: String,
}

#[derive(Clone)]
pub struct FakeSmtp {
    pub addr: SocketAddr,
    mails: Arc<Mutex<Vec<Mail>>>,
    refuse: Arc<AtomicUsize>,
    pub refused: Arc<AtomicUsize>,
}

impl FakeSmtp {
    pub async fn start() -> FakeSmtp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let smtp = FakeSmtp {
            addr: listener.local_addr().unwrap(),
            mails: Arc::default(),
            refuse: Arc::default(),
            refused: Arc::default(),
        };
        let serving = smtp.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serving.clone().session(stream));
            }
        });
        smtp
    }

    /// `smtp://` URL for `--smtp-url` (no TLS on loopback).
    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    /// The next `n` mails get "451 try again later".
    pub fn refuse_next(&self, n: usize) {
        self.refuse.store(n, Ordering::SeqCst);
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }

    /// Waits until a mail to `to` has arrived, and returns it.
    pub async fn mail_to(&self, to: &str) -> Mail {
        let started = Instant::now();
        loop {
            if let Some(mail) = self.mails().into_iter().find(|m| m.to.iter().any(|t| t == to)) {
                return mail;
            }
            assert!(started.elapsed() < Duration::from_secs(20), "no mail to {to}; got {:?}", self.mails());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn session(self, stream: TcpStream) {
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        let _ = write.write_all(b"220 fake.smtp ESMTP\r\n").await;
        let mut to = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            let upper = line.to_ascii_uppercase();
            let answer: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                b"250-fake.smtp\r\n250 8BITMIME\r\n"
            } else if upper.starts_with("MAIL FROM") {
                to.clear();
                b"250 OK\r\n"
            } else if upper.starts_with("RCPT TO") {
                let address = line[8..].trim().trim_start_matches('<').trim_end_matches('>').to_owned();
                to.push(address);
                b"250 OK\r\n"
            } else if upper == "DATA" {
                let _ = write.write_all(b"354 go ahead\r\n").await;
                let mut data = String::new();
                while let Ok(Some(line)) = lines.next_line().await {
                    if line == "." {
                        break;
                    }
                    data.push_str(line.strip_prefix('.').unwrap_or(&line));
                    data.push('\n');
                }
                let refuse = self
                    .refuse
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if refuse {
                    self.refused.fetch_add(1, Ordering::SeqCst);
                    b"451 4.3.0 try again later\r\n"
                } else {
                    // Soft line breaks of quoted-printable, joined so a link reads whole.
                    let data = data.replace("=\n", "").replace("=3D", "=");
                    self.mails.lock().unwrap().push(Mail { to: to.clone(), data });
                    b"250 OK queued\r\n"
                }
            } else if upper.starts_with("QUIT") {
                let _ = write.write_all(b"221 bye\r\n").await;
                return;
            } else {
                b"250 OK\r\n"
            };
            if write.write_all(answer).await.is_err() {
                return;
            }
        }
    }
}
