//! A client account's activity: the timeline with filters and paging, the pause, the dead jobs
//! and their replay, and the payments of the last 30 days as a chart.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{Days, Utc};
use serde::Deserialize;

use super::{ClientHead, NoFields, Opened, open, when};
use crate::error::Result;
use crate::ids::{AgencyId, ClientId, LeadId};
use crate::kommo::stages::Names;
use crate::state::AppState;
use crate::store::activity::Filter;
use crate::tenants::activity::{self, ActivityEntry, KINDS, OUTCOMES};
use crate::web::Page;
use crate::web::access::{ClientPage, PostedTo};
use crate::web::chart::{self, Chart};
use crate::web::session::PagePath;
use crate::web::view::Time;
use crate::web::view::{Chrome, done, page as render};

const PAGE: i64 = 50;
const CHART_DAYS: u64 = 30;

/// Query values as typed: an empty select or number input arrives as an empty string.
#[derive(Debug, Default, Deserialize)]
pub struct ActivityQuery {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    outcome: String,
    #[serde(default)]
    lead_id: String,
    #[serde(default)]
    before: String,
    done: Option<String>,
}

pub struct Choice {
    pub value: &'static str,
    pub label: &'static str,
    pub selected: bool,
}

pub struct Entry {
    pub id: String,
    pub at: Time,
    /// The kind's code (for filters) and its words.
    pub kind: String,
    pub kind_words: &'static str,
    pub outcome_words: &'static str,
    pub outcome: String,
    pub tone: &'static str,
    pub lead_id: String,
    pub tx_ref: String,
    pub detail: String,
}

pub struct DeadJob {
    pub id: String,
    pub kind: String,
    pub attempts: i64,
    pub last_error: String,
    pub created_at: String,
}

#[derive(Template)]
#[template(path = "client_activity.html")]
pub struct ActivityPage {
    chrome: Chrome,
    client: ClientHead,
    kinds: Vec<Choice>,
    outcomes: Vec<Choice>,
    lead_id: String,
    lead_error: Option<&'static str>,
    filtered: bool,
    entries: Vec<Entry>,
    /// The next page's address, when there may be one.
    older: Option<String>,
    /// (reason, since)
    paused: Option<(String, Time)>,
    dead: Vec<DeadJob>,
    charts: Vec<Chart>,
    chart_days: u64,
}

fn choices(values: &'static [&'static str], chosen: &str, label: fn(&str) -> &'static str) -> Vec<Choice> {
    values.iter().map(|v| Choice { value: v, label: label(v), selected: *v == chosen }).collect()
}

fn outcome_words(outcome: &str) -> &'static str {
    match outcome {
        "ok" => "Done",
        "ignored" => "Ignored",
        "failed" => "Failed",
        "refused" => "Refused",
        _ => "Other",
    }
}

const STAGE: &str = "stage ";

/// The stage ids an entry's words name ("stage 7003"), in order.
fn stage_ids(detail: &str) -> impl Iterator<Item = i64> + '_ {
    detail.match_indices(STAGE).filter_map(move |(at, _)| {
        let after = &detail[at + STAGE.len()..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        after[..digits].parse::<i64>().ok()
    })
}

/// "stage 7003" in an entry's words becomes "stage Invoice (Sales)", from Kommo's pipelines.
fn named_stages(detail: &str, names: &HashMap<i64, String>) -> String {
    let mut out = String::with_capacity(detail.len());
    let mut rest = detail;
    while let Some(at) = rest.find(STAGE) {
        let (before, after) = rest.split_at(at + STAGE.len());
        out.push_str(before);
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        match after[..digits].parse::<i64>().ok().and_then(|id| names.get(&id)) {
            Some(name) => out.push_str(name),
            None => out.push_str(&after[..digits]),
        }
        rest = &after[digits..];
    }
    out.push_str(rest);
    out
}

/// Stage names by id ("Invoice (Sales)") for the stages the entries name, from the per-account
/// cache (`kommo::stages`): the page refreshes every 10 s, and asking Kommo each time would
/// spend the account's rate budget. Ids stay when Kommo never answered.
async fn stage_names(state: &AppState, client: ClientId, entries: &[ActivityEntry]) -> Names {
    let wanted: Vec<i64> = entries.iter().flat_map(|e| stage_ids(&e.detail)).collect();
    if wanted.is_empty() {
        return Names::default();
    }
    state.kommo.stage_names(client, &wanted).await
}

fn tone(outcome: &str) -> &'static str {
    match outcome {
        "ok" => "good",
        "failed" => "bad",
        _ => "none",
    }
}

async fn activity_page(state: &AppState, page: &ClientPage, query: ActivityQuery) -> Result<ActivityPage> {
    let client = page.client;
    let Opened { access, chrome, head, .. } = open(state, page, "activity", query.done.as_deref()).await?;
    // Only the documented values filter; anything else shows everything rather than nothing.
    let kind = KINDS.iter().find(|k| **k == query.kind).map(|k| (*k).to_owned());
    let outcome = OUTCOMES.iter().find(|o| **o == query.outcome).map(|o| (*o).to_owned());
    let lead_text = query.lead_id.trim().to_owned();
    let lead_id = lead_text.parse::<i64>().ok().map(LeadId);
    let lead_error =
        (!lead_text.is_empty() && lead_id.is_none()).then_some("must be a Kommo lead id (a whole number)");
    let before = query.before.trim().parse::<uuid::Uuid>().ok();
    let filter = Filter { kind: kind.clone(), outcome: outcome.clone(), lead_id, before };
    let rows = activity::activity(&state.db, &access, client, &filter, PAGE).await?;
    let older = match rows.last() {
        Some(last) if i64::try_from(rows.len()).unwrap_or(0) >= PAGE => {
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            for (name, value) in [
                ("kind", kind.as_deref()),
                ("outcome", outcome.as_deref()),
                ("lead_id", lead_id.map(|_| lead_text.as_str())),
            ] {
                if let Some(value) = value {
                    query.append_pair(name, value);
                }
            }
            query.append_pair("before", &last.id.to_string());
            Some(format!("{}/activity?{}", head.base, query.finish()))
        }
        _ => None,
    };
    let names = stage_names(state, client, &rows).await;
    let entries = rows
        .into_iter()
        .map(|r| Entry {
            id: r.id.to_string(),
            at: Time::from_ms(r.at_ms),
            tone: tone(&r.outcome),
            kind_words: activity::kind_words(&r.kind),
            outcome_words: outcome_words(&r.outcome),
            kind: r.kind,
            outcome: r.outcome,
            lead_id: r.lead_id.map(|l| l.to_string()).unwrap_or_default(),
            tx_ref: r.tx_ref.unwrap_or_default(),
            detail: named_stages(&r.detail, &names),
        })
        .collect();
    let status = activity::status(&state.db, &access, client).await?;
    let dead =
        activity::jobs(&state.db, &access, client, Some(crate::store::jobs::JobState::Dead.as_str()), 100)
            .await?
            .into_iter()
            .map(|j| DeadJob {
                id: j.id.to_string(),
                kind: j.kind,
                attempts: j.attempts,
                last_error: j.last_error.unwrap_or_default(),
                created_at: when(j.created_at_ms),
            })
            .collect();
    let today = Utc::now().date_naive();
    let first = today.checked_sub_days(Days::new(CHART_DAYS - 1)).unwrap_or(today);
    let since = first.and_hms_opt(0, 0, 0).map_or(0, |t| t.and_utc().timestamp_millis());
    let totals = activity::payments_per_day(&state.db, &access, client, since).await?;
    Ok(ActivityPage {
        chrome,
        client: head,
        kinds: choices(KINDS, kind.as_deref().unwrap_or_default(), activity::kind_words),
        outcomes: choices(OUTCOMES, outcome.as_deref().unwrap_or_default(), outcome_words),
        lead_id: lead_text,
        lead_error,
        filtered: kind.is_some() || outcome.is_some() || lead_id.is_some() || before.is_some(),
        entries,
        older,
        paused: status.paused.map(|p| (p.reason, Time::from_rfc3339(&p.since))),
        dead,
        charts: chart::per_currency(first, CHART_DAYS, &totals),
        chart_days: CHART_DAYS,
    })
}

pub async fn page(
    State(state): State<AppState>,
    page: ClientPage,
    Query(query): Query<ActivityQuery>,
) -> Response {
    render(activity_page(&state, &page, query).await.map(|p| Page::render(StatusCode::OK, &p)))
}

pub async fn replay(
    State(state): State<AppState>,
    PagePath((_, _, job)): PagePath<(AgencyId, ClientId, uuid::Uuid)>,
    PostedTo { page, .. }: PostedTo<ClientPage, NoFields>,
) -> Response {
    let ClientPage { access, agency, client, .. } = page;
    match activity::replay(&state.db, &state.queue, &access, client, job).await {
        Ok(()) => done(&format!("/app/agencies/{agency}/clients/{client}/activity"), "job-replayed"),
        Err(error) => crate::web::error_page(error).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::{named_stages, stage_ids};

    #[test]
    fn stage_ids_become_names_where_known() {
        let names = HashMap::from([(7003, "Invoice (Sales)".to_owned())]);
        assert_eq!(
            named_stages("Kommo: lead 5 in stage 7003: not a trigger stage", &names),
            "Kommo: lead 5 in stage Invoice (Sales): not a trigger stage"
        );
        assert_eq!(named_stages("moved to stage 142", &names), "moved to stage 142");
        assert_eq!(named_stages("no stage here", &names), "no stage here");
    }

    #[test]
    fn the_stages_an_entry_names_are_found() {
        assert_eq!(stage_ids("stage 7003 is not a trigger stage").collect::<Vec<_>>(), [7003]);
        assert_eq!(stage_ids("from stage 7002 to stage 142").collect::<Vec<_>>(), [7002, 142]);
        assert!(stage_ids("no stage here").next().is_none());
    }
}
