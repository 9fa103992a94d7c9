//! How a step of a job stops short: `?` on any failure turns it into the job's outcome, with the
//! whole cause chain in its text, so "cannot reach Kommo" arrives on the timeline with the DNS,
//! TLS or connection error behind it.

use std::error::Error as StdError;
use std::time::Duration;

use crate::flutterwave::client::FlutterwaveError;
use crate::kommo::KommoError;
use crate::queue::Outcome;
use crate::store::StoreError;
use crate::store::pauses::PauseCause;

/// What a step returns: `Ok` to go on (a job whose steps all return `Ok` is done).
pub(crate) type Step<T = ()> = Result<T, Stop>;

/// Why a job stops before its last step.
#[derive(Debug)]
pub(crate) enum Stop {
    /// The attempt ends with this outcome (never `Outcome::Done`: finishing early is `Ok`).
    End(Outcome),
    /// A retry the step expected, which the timeline does not hear of each time: the step
    /// writes one entry when it stops waiting.
    Wait(Waiting),
}

#[derive(Debug)]
pub(crate) struct Waiting {
    pub reason: String,
    pub after: Duration,
}

impl Stop {
    pub(crate) fn retry(error: impl Into<String>) -> Stop {
        Stop::End(Outcome::Retry { error: error.into(), after: None })
    }

    pub(crate) fn pause(cause: PauseCause, reason: impl Into<String>) -> Stop {
        Stop::End(Outcome::Pause { reason: reason.into(), cause })
    }

    pub(crate) fn dead(error: impl Into<String>) -> Stop {
        Stop::End(Outcome::Dead { error: error.into() })
    }
}

/// The error and each of its causes, `: `-separated; a cause whose text its error already
/// quotes is not repeated.
pub fn chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !said.is_empty() && !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

impl From<Outcome> for Stop {
    fn from(outcome: Outcome) -> Stop {
        Stop::End(outcome)
    }
}

impl From<StoreError> for Stop {
    fn from(error: StoreError) -> Stop {
        Stop::retry(chain(&error))
    }
}

impl From<crate::error::Error> for Stop {
    fn from(error: crate::error::Error) -> Stop {
        Stop::retry(chain(&error))
    }
}

impl From<KommoError> for Stop {
    fn from(error: KommoError) -> Stop {
        Stop::End(kommo_outcome(error))
    }
}

impl From<FlutterwaveError> for Stop {
    fn from(error: FlutterwaveError) -> Stop {
        Stop::End(flutterwave_outcome(error))
    }
}

/// What a Kommo failure means for the job.
pub(crate) fn kommo_outcome(error: KommoError) -> Outcome {
    match error {
        KommoError::NotConnected => {
            Outcome::Pause { reason: "Kommo is not connected".into(), cause: PauseCause::KommoNotConnected }
        }
        KommoError::Revoked => Outcome::Pause {
            reason: "Kommo access was revoked (uninstalled)".into(),
            cause: PauseCause::KommoRevoked,
        },
        KommoError::NeedsReauth(why) => Outcome::Pause { reason: why, cause: PauseCause::KommoReauth },
        KommoError::PaymentRequired => Outcome::Pause {
            reason: "the Kommo account's subscription has ended".into(),
            cause: PauseCause::KommoPayment,
        },
        KommoError::Config(why) => Outcome::Pause { reason: why, cause: PauseCause::Settings },
        KommoError::RateLimited { retry_after } => {
            Outcome::Retry { error: "Kommo asked to slow down".into(), after: Some(retry_after) }
        }
        // An IP block lifts by itself after a while; hammering it would extend it.
        KommoError::Blocked(why) => Outcome::Retry {
            error: format!("Kommo refuses requests: {why}"),
            after: Some(Duration::from_secs(600)),
        },
        KommoError::Rejected { status, detail } => {
            Outcome::Dead { error: format!("Kommo refused ({status}): {detail}") }
        }
        other => Outcome::Retry { error: chain(&other), after: None },
    }
}

/// What a Flutterwave failure means for the job.
pub(crate) fn flutterwave_outcome(error: FlutterwaveError) -> Outcome {
    match error {
        FlutterwaveError::Unauthorized => Outcome::Pause {
            reason: "Flutterwave refused the secret key; paste the current keys".into(),
            cause: PauseCause::FlutterwaveKeyRefused,
        },
        FlutterwaveError::RateLimited { retry_after } => {
            Outcome::Retry { error: "Flutterwave asked to slow down".into(), after: Some(retry_after) }
        }
        FlutterwaveError::Rejected { status, message } => {
            Outcome::Dead { error: format!("Flutterwave refused ({status}): {message}") }
        }
        FlutterwaveError::Invalid(why) => Outcome::Dead { error: format!("not sent to Flutterwave: {why}") },
        other => Outcome::Retry { error: chain(&other), after: None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot reach Kommo")]
    struct Outer(#[source] Middle);

    #[derive(Debug, thiserror::Error)]
    #[error("error sending request: {0}")]
    struct Middle(#[source] std::io::Error);

    #[test]
    fn the_chain_names_every_cause_once() {
        let error = Outer(Middle(std::io::Error::other("dns error: no such host")));
        assert_eq!(chain(&error), "cannot reach Kommo: error sending request: dns error: no such host");
    }

    #[tokio::test]
    async fn a_transport_failure_keeps_its_cause_in_the_outcome() {
        // Port 9 (discard) on loopback: nothing listens, the connection is refused.
        let refused = reqwest::get("http://127.0.0.1:9/").await.expect_err("nothing listens");
        let Stop::End(Outcome::Retry { error, .. }) = Stop::from(KommoError::Transport(refused)) else {
            panic!("a transport failure is retried");
        };
        assert!(error.starts_with("cannot reach Kommo: "), "{error}");
        assert!(error.to_lowercase().contains("connect"), "the cause is kept: {error}");
    }
}
