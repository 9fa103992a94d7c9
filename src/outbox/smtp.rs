//! Mail over SMTP through lettre (rustls with ring for smtps:// and STARTTLS).

use std::time::Duration;

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::Failure;
use crate::vault::Secret;

const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    /// The mailer for `PIPEPAY_SMTP_URL` and `PIPEPAY_EMAIL_FROM` (both checked by the parser).
    pub fn new(url: &Secret, from: &str) -> Result<Mailer, String> {
        crate::install_tls_provider();
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose())
            .map_err(|e| format!("PIPEPAY_SMTP_URL: {e}"))?
            .timeout(Some(SMTP_TIMEOUT))
            .build();
        let from = from.parse().map_err(|e| format!("PIPEPAY_EMAIL_FROM: {e}"))?;
        Ok(Mailer { transport, from })
    }

    pub async fn send(&self, to: &str, subject: &str, body: &str) -> Result<(), Failure> {
        let to: Mailbox =
            to.parse().map_err(|e| Failure::Permanent(format!("not an address ({to}): {e}")))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body.to_owned())
            .map_err(|e| Failure::Permanent(format!("cannot build the mail: {e}")))?;
        match self.transport.send(message).await {
            Ok(_) => Ok(()),
            Err(error) if error.is_permanent() => {
                Err(Failure::Permanent(format!("the SMTP server refused the mail: {error}")))
            }
            Err(error) => Err(Failure::Transient(format!("SMTP: {}", crate::error_chain(&error)))),
        }
    }
}
