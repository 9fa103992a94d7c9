//! The isolation matrix: every agency-scoped endpoint, called with another agency's ids, by
//! each kind of caller. Strangers get 404 and change nothing; members read but do not write.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{Value, json};

use crate::fakes::kommo::{AccountSpec, FakeKommo};
use crate::kommo;
use crate::on_both_engines;
use crate::support::agent::Owner;
use crate::support::{Agent, Engine, TestApp};

on_both_engines!(
    another_agencys_ids_are_not_found_and_nothing_changes,
    each_role_does_only_its_own_work,
    the_matrix_covers_every_agency_endpoint,
);

/// (method, path template, body). Placeholders: {agency} {client} {user} {invitation} {key}.
const ENDPOINTS: &[(&str, &str, Option<&str>)] = &[
    ("GET", "/api/v1/agencies/{agency}", None),
    ("GET", "/api/v1/agencies/{agency}/members", None),
    ("PATCH", "/api/v1/agencies/{agency}/members/{user}", Some(r#"{"role":"admin"}"#)),
    ("DELETE", "/api/v1/agencies/{agency}/members/{user}", None),
    ("GET", "/api/v1/agencies/{agency}/invitations", None),
    (
        "POST",
        "/api/v1/agencies/{agency}/invitations",
        Some(r#"{"email":"newcomer@else.example","role":"admin"}"#),
    ),
    ("DELETE", "/api/v1/agencies/{agency}/invitations/{invitation}", None),
    ("GET", "/api/v1/agencies/{agency}/clients", None),
    ("POST", "/api/v1/agencies/{agency}/clients", Some(r#"{"name":"Intruder Ltd"}"#)),
    ("GET", "/api/v1/agencies/{agency}/clients/{client}", None),
    ("DELETE", "/api/v1/agencies/{agency}/clients/{client}", None),
    ("GET", "/api/v1/agencies/{agency}/clients/{client}/settings", None),
    ("PUT", "/api/v1/agencies/{agency}/clients/{client}/settings", Some(r#"{"display_name":"Taken over"}"#)),
    ("POST", "/api/v1/agencies/{agency}/clients/{client}/ingress-token", None),
    ("GET", "/api/v1/agencies/{agency}/clients/{client}/flutterwave-keys", None),
    (
        "PUT",
        "/api/v1/agencies/{agency}/clients/{client}/flutterwave-keys",
        Some(
            r#"{"secret_key":"FLWSECK_TEST-ffffffffffffffffffffffffffffffff-X","webhook_hash":"attacker-chosen-hash-0001"}"#,
        ),
    ),
    ("GET", "/api/v1/agencies/{agency}/api-keys", None),
    ("POST", "/api/v1/agencies/{agency}/api-keys", Some(r#"{"name":"stolen","role":"admin"}"#)),
    ("DELETE", "/api/v1/agencies/{agency}/api-keys/{key}", None),
    ("GET", "/api/v1/agencies/{agency}/audit", None),
    ("GET", "/api/v1/agencies/{agency}/clients/{client}/webhook-urls", None),
    ("GET", "/api/v1/agencies/{agency}/clients/{client}/kommo", None),
    ("POST", "/api/v1/agencies/{agency}/clients/{client}/kommo/connect", None),
    ("DELETE", "/api/v1/agencies/{agency}/clients/{client}/kommo", None),
    ("GET", "/api/v1/agencies/{agency}/clients/{client}/kommo/pipelines", None),
    ("GET", "/api/v1/agencies/{agency}/clients/{client}/kommo/lead-fields", None),
    ("GET", "/api/v1/agencies/{agency}/clients/{client}/activity", None),
    ("GET", "/api/v1/agencies/{agency}/clients/{client}/jobs", None),
    ("GET", "/api/v1/agencies/{agency}/clients/{client}/pipeline", None),
    ("POST", "/api/v1/agencies/{agency}/clients/{client}/jobs/{job}/replay", None),
    ("GET", "/api/v1/agencies/{agency}/clients/{client}/activity/{entry}", None),
    ("POST", "/api/v1/agencies/{agency}/clients/{client}/activity/{entry}/replay", None),
    ("GET", "/api/v1/agencies/{agency}/clients/{client}/payments", None),
    ("GET", "/api/v1/agencies/{agency}/payments/totals", None),
    ("POST", "/api/v1/agencies/{agency}/clients/{client}/test-events", Some(r#"{"service":"kommo"}"#)),
    ("GET", "/api/v1/agencies/{agency}/alerts", None),
    (
        "PUT",
        "/api/v1/agencies/{agency}/alerts",
        Some(r#"{"email_owners":false,"webhook_url":"https://alerts.attacker.example/hook"}"#),
    ),
    ("GET", "/api/v1/agencies/{agency}/telemetry", None),
    (
        "PUT",
        "/api/v1/agencies/{agency}/telemetry",
        Some(r#"{"endpoint":"https://otlp.attacker.example","headers":{"x-api-key":"stolen"}}"#),
    ),
    ("DELETE", "/api/v1/agencies/{agency}/telemetry", None),
];

/// Reads only admins may make: the webhook URLs carry the ingress token.
const ADMIN_READS: &[&str] = &["/api/v1/agencies/{agency}/clients/{client}/webhook-urls"];

/// One agency with one of everything, so every placeholder has a real id.
struct Agency {
    owner: Owner,
    member: Agent,
    admin: Agent,
    admin_key: String,
    member_key: String,
    ids: Ids,
}

#[derive(Clone)]
struct Ids {
    agency: String,
    client: String,
    user: String,
    invitation: String,
    key: String,
    job: String,
    entry: String,
}

impl Ids {
    fn fill(&self, template: &str) -> String {
        template
            .replace("{agency}", &self.agency)
            .replace("{client}", &self.client)
            .replace("{user}", &self.user)
            .replace("{invitation}", &self.invitation)
            .replace("{key}", &self.key)
            .replace("{job}", &self.job)
            .replace("{entry}", &self.entry)
    }
}

async fn agency(app: &TestApp, fake: &FakeKommo, account: i64, tag: &str) -> Agency {
    let owner = app.sign_up(&format!("owner@{tag}.example"), &format!("Agency {tag}")).await;
    let member = app.add_member(&owner, &format!("member@{tag}.example"), "member").await;
    let admin = app.add_member(&owner, &format!("admin@{tag}.example"), "admin").await;
    let (client, _) = app.add_client(&owner.agent, &owner.agency, &format!("{tag} client")).await;
    fake.add_account(AccountSpec {
        id: account,
        subdomain: tag.into(),
        host: format!("{tag}.kommo.com"),
        currency: "KES".into(),
    });
    fake.add_pipeline(account, 7001, "Sales", &[7002]);
    let (status, page) = kommo::connect(&owner.agent, &owner.agency, &client, fake, account).await;
    assert_eq!(status, 200, "{page}");
    app.flutterwave_merchant(
        "FLWSECK_TEST-0123456789abcdef0123456789abcdef-X",
        &format!("{tag}-webhook-hash-value"),
    );
    owner
        .agent
        .expect(
            Method::PUT,
            &format!("/api/v1/agencies/{}/clients/{client}/flutterwave-keys", owner.agency),
            Some(json!({"secret_key": "FLWSECK_TEST-0123456789abcdef0123456789abcdef-X",
                        "webhook_hash": format!("{tag}-webhook-hash-value")})),
            200,
        )
        .await;
    let invited = owner
        .agent
        .expect(
            Method::POST,
            &format!("/api/v1/agencies/{}/invitations", owner.agency),
            Some(json!({"email": format!("pending@{tag}.example"), "role": "member"})),
            201,
        )
        .await;
    owner
        .agent
        .expect(
            Method::PUT,
            &format!("/api/v1/agencies/{}/telemetry", owner.agency),
            Some(json!({"endpoint": format!("https://otlp.{tag}.example"),
                        "headers": {"x-api-key": format!("{tag}-vendor-key-0001")}})),
            200,
        )
        .await;
    let (key, admin_key) = app.add_api_key(&owner.agent, &owner.agency, "admin").await;
    // One job, finished before anyone looks, so every id has something behind it.
    let hooks =
        owner.agent.json(&format!("/api/v1/agencies/{}/clients/{client}/webhook-urls", owner.agency)).await;
    // Lost: a stage change that makes a job even before a trigger stage is set.
    let form = format!("account[id]={account}&leads[status][0][id]=77&leads[status][0][status_id]=143");
    let sent = app
        .http
        .post(hooks["kommo"].as_str().unwrap())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 200);
    let jobs_path = format!("/api/v1/agencies/{}/clients/{client}/jobs", owner.agency);
    let mut job = String::new();
    for _ in 0..200 {
        let jobs = owner.agent.json(&jobs_path).await;
        if jobs[0]["state"] == "done" {
            job = jobs[0]["id"].as_str().unwrap().to_owned();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(!job.is_empty(), "the job finished");
    let activity =
        owner.agent.json(&format!("/api/v1/agencies/{}/clients/{client}/activity", owner.agency)).await;
    let entry = activity[0]["id"].as_str().unwrap().to_owned();
    let (_, member_key) = app.add_api_key(&owner.agent, &owner.agency, "member").await;
    let ids = Ids {
        agency: owner.agency.clone(),
        client,
        user: owner.user.clone(),
        invitation: invited["invitation"]["id"].as_str().unwrap().to_owned(),
        key,
        job,
        entry,
    };
    Agency { owner, member, admin, admin_key, member_key, ids }
}

/// Everything an agency's owner can read about it, to compare before and after.
async fn snapshot(owner: &Agent, ids: &Ids) -> Vec<Value> {
    let mut all = Vec::new();
    for (method, template, _) in ENDPOINTS {
        if *method == "GET" && !ADMIN_READS.contains(template) {
            let mut value = owner.json(&ids.fill(template)).await;
            forget_last_use(&mut value);
            all.push(value);
        }
    }
    all
}

/// Using an API key stamps its last use; that is the one change a read may make.
fn forget_last_use(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.remove("last_used_at");
            map.values_mut().for_each(forget_last_use);
        }
        Value::Array(items) => items.iter_mut().for_each(forget_last_use),
        _ => {}
    }
}

async fn call(agent: &Agent, method: &str, path: &str, body: Option<&str>) -> u16 {
    let body: Option<Value> = body.map(|b| serde_json::from_str(b).unwrap());
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    agent.send(method, path, body.as_ref()).await.status().as_u16()
}

async fn another_agencys_ids_are_not_found_and_nothing_changes(engine: Engine) {
    let fake = FakeKommo::start().await;
    let app = kommo::app_with_kommo(engine, &fake, &[]).await;
    let a = agency(&app, &fake, 1001, "a").await;
    let b = agency(&app, &fake, 1002, "b").await;
    let before = snapshot(&b.owner.agent, &b.ids).await;

    let strangers = [
        ("A's owner", a.owner.agent.clone()),
        ("A's member", a.member.clone()),
        ("A's admin key", app.with_key(&a.admin_key)),
    ];
    // B's ids everywhere, and A's agency with B's other ids (a guessed or leaked id).
    let mixed = Ids { agency: a.ids.agency.clone(), ..b.ids.clone() };
    for (who, agent) in &strangers {
        for (method, template, body) in ENDPOINTS {
            let path = b.ids.fill(template);
            assert_eq!(
                call(agent, method, &path, *body).await,
                404,
                "{who}: {method} {template} with B's ids"
            );
            let has_sub_id = template.matches('{').count() > 1;
            if has_sub_id && *who != "A's member" {
                let path = mixed.fill(template);
                assert_eq!(
                    call(agent, method, &path, *body).await,
                    404,
                    "{who}: {method} {template}, A + B's ids"
                );
            }
        }
    }
    assert_eq!(snapshot(&b.owner.agent, &b.ids).await, before, "agency B is exactly as it was");
    app.stop().await;
}

async fn each_role_does_only_its_own_work(engine: Engine) {
    let fake = FakeKommo::start().await;
    let app = kommo::app_with_kommo(engine, &fake, &[]).await;
    let a = agency(&app, &fake, 1001, "a").await;
    let before = snapshot(&a.owner.agent, &a.ids).await;
    let member_key = app.with_key(&a.member_key);
    for (who, agent) in [("member", &a.member), ("member key", &member_key)] {
        for (method, template, body) in ENDPOINTS {
            let status = call(agent, method, &a.ids.fill(template), *body).await;
            let expected = if *method == "GET" && !ADMIN_READS.contains(template) { 200 } else { 403 };
            assert_eq!(status, expected, "{who}: {method} {template}");
        }
    }
    assert_eq!(snapshot(&a.owner.agent, &a.ids).await, before, "members changed nothing");

    // Admins manage client accounts and API keys, not people.
    let people =
        |t: &str| t.contains("/members/") || t.ends_with("/invitations") || t.contains("/invitations/");
    let admin_key = app.with_key(&a.admin_key);
    for (who, agent) in [("admin", &a.admin), ("admin key", &admin_key)] {
        for (method, template, body) in ENDPOINTS.iter().filter(|(m, t, _)| *m != "GET" && people(t)) {
            assert_eq!(
                call(agent, method, &a.ids.fill(template), *body).await,
                403,
                "{who}: {method} {template}"
            );
        }
    }
    // Keys never mint or revoke keys; a person with the admin role does.
    let keys_path = format!("/api/v1/agencies/{}/api-keys", a.ids.agency);
    assert_eq!(call(&admin_key, "POST", &keys_path, Some(r#"{"name":"x","role":"member"}"#)).await, 403);
    assert_eq!(call(&a.admin, "POST", &keys_path, Some(r#"{"name":"x","role":"member"}"#)).await, 201);
    assert_eq!(
        call(
            &admin_key,
            "POST",
            &format!("/api/v1/agencies/{}/clients", a.ids.agency),
            Some(r#"{"name":"Via key"}"#)
        )
        .await,
        201
    );
    app.stop().await;
}

async fn the_matrix_covers_every_agency_endpoint(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let document: Value = app.get("/api/v1/openapi.json").await.json().await.unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let mut documented = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if path.starts_with("/api/v1/agencies/") {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    let tested: BTreeSet<(String, String)> =
        ENDPOINTS.iter().map(|(m, p, _)| (m.to_string(), p.to_string())).collect();
    assert_eq!(documented, tested, "every agency endpoint is in the isolation matrix");
    app.stop().await;
}
