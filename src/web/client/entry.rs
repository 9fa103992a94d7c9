//! One timeline entry in full: the webhook (masked), the job's attempts and error, its other
//! steps, and running it again.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::{ClientHead, NoFields, Opened, open, when};
use crate::error::Result;
use crate::ids::{AgencyId, ClientId};
use crate::state::AppState;
use crate::store::jobs::JobState;
use crate::tenants::activity::words_for;
use crate::tenants::entry;
use crate::web::Page;
use crate::web::access::{ClientPage, PostedTo};
use crate::web::session::PagePath;
use crate::web::view::{Chrome, Done, done, page as render};

type EntryPath = PagePath<(AgencyId, ClientId, uuid::Uuid)>;

pub struct Step {
    pub at: String,
    pub what: &'static str,
    pub outcome: String,
    pub detail: String,
    pub current: bool,
}

pub struct JobFacts {
    pub kind: String,
    pub state: String,
    pub attempts: i64,
    pub max_attempts: i64,
    pub last_error: Option<String>,
    pub created: String,
    pub run_at: String,
    /// Whether "Run again" can do anything now (not while the job waits to run).
    pub replayable: bool,
}

pub struct EventFacts {
    pub source: &'static str,
    pub received: String,
    pub outcome: String,
    pub detail: Option<String>,
    pub body: String,
}

/// One attempt at the job, with its calls in words.
pub struct AttemptFacts {
    pub number: i64,
    pub started: String,
    pub ended: &'static str,
    pub calls: Vec<CallFacts>,
    pub dropped: i64,
}

pub struct CallFacts {
    /// "GET /api/v4/leads/123 → 200 in 54 ms"
    pub line: String,
    pub vendor: &'static str,
    pub failed: bool,
    /// The answer, masked and cut when recorded; empty when there was none.
    pub answer: String,
}

fn ended_words(ended: &str) -> &'static str {
    match ended {
        "done" => "finished",
        "retry" => "failed; to be tried again",
        "paused" => "paused until a person acts",
        "dead" => "failed for good",
        "lost" => "stopped: its lease ran out",
        "abandoned" => "handed back at shutdown",
        _ => "ended",
    }
}

fn call_facts(call: entry::Call) -> CallFacts {
    let answered = match (call.status, &call.failure) {
        (Some(status), _) => status.to_string(),
        (None, Some(why)) => why.clone(),
        (None, None) => "no answer".to_owned(),
    };
    CallFacts {
        line: format!("{} {} → {answered} in {} ms", call.method, call.path, call.duration_ms),
        vendor: if call.vendor == "kommo" { "Kommo" } else { "Flutterwave" },
        failed: call.status.is_none_or(|s| s >= 400),
        answer: call.answer,
    }
}

#[derive(Template)]
#[template(path = "client_entry.html")]
pub struct EntryPage {
    chrome: Chrome,
    client: ClientHead,
    id: String,
    at: String,
    what: &'static str,
    outcome: String,
    lead_id: Option<i64>,
    tx_ref: Option<String>,
    detail: String,
    event: Option<EventFacts>,
    job: Option<JobFacts>,
    steps: Vec<Step>,
    attempts: Vec<AttemptFacts>,
}

async fn entry_page(
    state: &AppState,
    page: &ClientPage,
    id: uuid::Uuid,
    notice: Option<&str>,
) -> Result<EntryPage> {
    let client = page.client;
    let Opened { access, chrome, head, .. } = open(state, page, "activity", notice).await?;
    let found = entry::detail(&state.db, &access, client, id).await?;
    let e = found.entry;
    Ok(EntryPage {
        chrome,
        client: head,
        id: e.id.to_string(),
        at: when(e.at),
        what: words_for(e.kind),
        outcome: e.outcome.as_str().to_owned(),
        lead_id: e.lead_id.map(|l| l.0),
        tx_ref: e.tx_ref.map(|t| t.0),
        detail: e.detail,
        event: found.event.map(|ev| EventFacts {
            source: if ev.source == "kommo" { "Kommo" } else { "Flutterwave" },
            received: when(ev.received_at),
            outcome: ev.outcome,
            detail: ev.detail,
            body: ev.body,
        }),
        job: found.job.map(|j| JobFacts {
            replayable: matches!(j.state, JobState::Done | JobState::Dead),
            kind: j.kind,
            state: j.state.as_str().to_owned(),
            attempts: j.attempts,
            max_attempts: j.max_attempts,
            last_error: j.last_error,
            created: when(j.created_at),
            run_at: when(j.run_at),
        }),
        steps: found
            .steps
            .into_iter()
            .map(|s| Step {
                current: s.id == e.id,
                at: when(s.at),
                what: words_for(s.kind),
                outcome: s.outcome.as_str().to_owned(),
                detail: s.detail,
            })
            .collect(),
        attempts: found
            .attempts
            .into_iter()
            .map(|a| AttemptFacts {
                number: a.number,
                started: when(a.started_at),
                ended: ended_words(&a.ended),
                calls: a.calls.into_iter().map(call_facts).collect(),
                dropped: a.calls_dropped,
            })
            .collect(),
    })
}

pub async fn page(
    State(state): State<AppState>,
    page: ClientPage,
    PagePath((_, _, id)): EntryPath,
    Query(notice): Query<Done>,
) -> Response {
    render(
        entry_page(&state, &page, id, notice.done.as_deref()).await.map(|p| Page::render(StatusCode::OK, &p)),
    )
}

pub async fn replay(
    State(state): State<AppState>,
    PagePath((_, _, id)): EntryPath,
    PostedTo { page, .. }: PostedTo<ClientPage, NoFields>,
) -> Response {
    let ClientPage { access, agency, client, .. } = page;
    match entry::replay(&state.db, &state.queue, &access, client, id).await {
        Ok(()) => done(&format!("/app/agencies/{agency}/clients/{client}/activity/{id}"), "job-replayed"),
        Err(error) => crate::web::error_page(error).into_response(),
    }
}
