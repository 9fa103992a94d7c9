//! Every body-reading agency route answers who may call it before it reads the body: a
//! stranger hears 404 and a member with too little role 403 whatever they send, and only a
//! caller who may use the route hears what is wrong with the body (issue #13).

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::Value;

use crate::on_both_engines;
use crate::support::agent::Owner;
use crate::support::{Agent, Engine, TestApp};

on_both_engines!(
    a_stranger_is_not_found_whatever_the_body,
    too_little_role_is_forbidden_whatever_the_body,
    a_caller_who_may_use_the_route_hears_what_is_wrong_with_the_body,
    the_table_covers_every_body_reading_agency_route,
);

/// Who may use a route: its least role, and whether it takes a person (API keys may not).
#[derive(Clone, Copy, PartialEq)]
enum Needs {
    Admin,
    Owner,
    PersonAdmin,
    PersonOwner,
}

struct Route {
    method: &'static str,
    /// Placeholders: {agency} {client} {user}.
    path: &'static str,
    needs: Needs,
    /// Well-formed JSON whose field has the wrong type, and that field's name.
    wrong_field: (&'static str, &'static str),
}

const ROUTES: &[Route] = &[
    Route {
        method: "PATCH",
        path: "/api/v1/agencies/{agency}/members/{user}",
        needs: Needs::PersonOwner,
        wrong_field: (r#"{"role": "emperor"}"#, "role"),
    },
    Route {
        method: "POST",
        path: "/api/v1/agencies/{agency}/invitations",
        needs: Needs::PersonOwner,
        wrong_field: (r#"{"email": 5, "role": "member"}"#, "email"),
    },
    Route {
        method: "POST",
        path: "/api/v1/agencies/{agency}/api-keys",
        needs: Needs::PersonAdmin,
        wrong_field: (r#"{"name": ["k"], "role": "member"}"#, "name"),
    },
    Route {
        method: "POST",
        path: "/api/v1/agencies/{agency}/clients",
        needs: Needs::Admin,
        wrong_field: (r#"{"name": 5}"#, "name"),
    },
    Route {
        method: "PUT",
        path: "/api/v1/agencies/{agency}/clients/{client}/settings",
        needs: Needs::Admin,
        wrong_field: (r#"{"display_name": 5}"#, "display_name"),
    },
    Route {
        method: "PUT",
        path: "/api/v1/agencies/{agency}/clients/{client}/flutterwave-keys",
        needs: Needs::Admin,
        wrong_field: (r#"{"secret_key": 5}"#, "secret_key"),
    },
    Route {
        method: "PUT",
        path: "/api/v1/agencies/{agency}/telemetry",
        needs: Needs::Admin,
        wrong_field: (r#"{"endpoint": 5}"#, "endpoint"),
    },
    Route {
        method: "POST",
        path: "/api/v1/agencies/{agency}/clients/{client}/test-events",
        needs: Needs::Admin,
        wrong_field: (r#"{"service": "bitcoin"}"#, "service"),
    },
    Route {
        method: "PUT",
        path: "/api/v1/agencies/{agency}/alerts",
        needs: Needs::Owner,
        wrong_field: (r#"{"email_owners": "yes"}"#, "email_owners"),
    },
];

/// Bodies no route can read: broken JSON, well-formed JSON of the wrong shape, an empty body,
/// another content type. (content type, body)
const MALFORMED: &[(&str, &str)] = &[
    ("application/json", "{broken"),
    ("application/json", r#"{"nope": 1}"#),
    ("application/json", "[]"),
    ("application/json", ""),
    ("text/plain", "hello"),
];

/// One agency with a client account, a member, an admin and an API key of each role.
struct Agency {
    owner: Owner,
    member: Agent,
    admin: Agent,
    member_key: Agent,
    admin_key: Agent,
    client: String,
}

async fn agency(app: &TestApp, tag: &str) -> Agency {
    let owner = app.sign_up(&format!("owner@{tag}.example"), &format!("Agency {tag}")).await;
    let member = app.add_member(&owner, &format!("member@{tag}.example"), "member").await;
    let admin = app.add_member(&owner, &format!("admin@{tag}.example"), "admin").await;
    let (client, _) = app.add_client(&owner.agent, &owner.agency, &format!("{tag} client")).await;
    let (_, member_key) = app.add_api_key(&owner.agent, &owner.agency, "member").await;
    let (_, admin_key) = app.add_api_key(&owner.agent, &owner.agency, "admin").await;
    Agency {
        member,
        admin,
        member_key: app.with_key(&member_key),
        admin_key: app.with_key(&admin_key),
        client,
        owner,
    }
}

fn fill(template: &str, agency: &str, client: &str, user: &str) -> String {
    template.replace("{agency}", agency).replace("{client}", client).replace("{user}", user)
}

async fn send(agent: &Agent, method: &str, path: &str, content_type: &str, body: &str) -> (u16, Value) {
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = agent
        .http
        .request(method, format!("{}{path}", agent.base))
        .header("content-type", content_type)
        .body(body.to_owned());
    if let Some(csrf) = &agent.csrf {
        request = request.header("x-csrf-token", csrf);
    }
    if let Some(bearer) = &agent.bearer {
        request = request.bearer_auth(bearer);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn a_stranger_is_not_found_whatever_the_body(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let a = agency(&app, "a").await;
    let b = agency(&app, "b").await;
    let strangers = [("A's owner", &a.owner.agent), ("A's admin", &a.admin), ("A's admin key", &a.admin_key)];
    for (who, agent) in strangers {
        for route in ROUTES {
            // B's ids, and A's own agency with B's client account (a guessed or leaked id).
            let mut paths = vec![fill(route.path, &b.owner.agency, &b.client, &b.owner.user)];
            if route.path.contains("{client}") {
                paths.push(fill(route.path, &a.owner.agency, &b.client, &b.owner.user));
            }
            for path in paths {
                for (content_type, body) in
                    MALFORMED.iter().chain([&("application/json", route.wrong_field.0)])
                {
                    let (status, problem) = send(agent, route.method, &path, content_type, body).await;
                    assert_eq!(
                        status, 404,
                        "{who}: {} {path} with {content_type} {body:?}: {problem}",
                        route.method
                    );
                    assert_eq!(problem["status"], 404, "problem+json: {problem}");
                }
            }
        }
    }
    app.stop().await;
}

async fn too_little_role_is_forbidden_whatever_the_body(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let a = agency(&app, "a").await;
    for route in ROUTES {
        let too_little: Vec<(&str, &Agent)> = match route.needs {
            Needs::Admin => vec![("member", &a.member), ("member key", &a.member_key)],
            Needs::Owner => vec![
                ("member", &a.member),
                ("admin", &a.admin),
                ("member key", &a.member_key),
                ("admin key", &a.admin_key),
            ],
            Needs::PersonAdmin => {
                vec![("member", &a.member), ("member key", &a.member_key), ("admin key", &a.admin_key)]
            }
            Needs::PersonOwner => {
                vec![("member", &a.member), ("admin", &a.admin), ("admin key", &a.admin_key)]
            }
        };
        let path = fill(route.path, &a.owner.agency, &a.client, &a.owner.user);
        for (who, agent) in too_little {
            for (content_type, body) in MALFORMED.iter().chain([&("application/json", route.wrong_field.0)]) {
                let (status, problem) = send(agent, route.method, &path, content_type, body).await;
                assert_eq!(
                    status, 403,
                    "{who}: {} {path} with {content_type} {body:?}: {problem}",
                    route.method
                );
            }
        }
        // A client account that is not there is still a 404 before the role is asked.
        if route.path.contains("{client}") {
            let missing = fill(route.path, &a.owner.agency, &uuid::Uuid::new_v4().to_string(), &a.owner.user);
            let (status, _) = send(&a.member, route.method, &missing, "application/json", "{").await;
            assert_eq!(status, 404, "member: {} with a missing client account", route.method);
        }
        // So is a member who is not there.
        if route.path.contains("{user}") {
            let missing = fill(route.path, &a.owner.agency, &a.client, &uuid::Uuid::new_v4().to_string());
            for (who, agent) in [("member", &a.member), ("admin", &a.admin), ("admin key", &a.admin_key)] {
                let (status, _) = send(agent, route.method, &missing, "application/json", "{").await;
                assert_eq!(status, 404, "{who}: {} with a missing member", route.method);
            }
        }
    }
    app.stop().await;
}

async fn a_caller_who_may_use_the_route_hears_what_is_wrong_with_the_body(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let a = agency(&app, "a").await;
    for route in ROUTES {
        let path = fill(route.path, &a.owner.agency, &a.client, &a.owner.user);
        let mut allowed: Vec<(&str, &Agent)> = vec![("owner", &a.owner.agent)];
        match route.needs {
            Needs::Admin => allowed.extend([("admin", &a.admin), ("admin key", &a.admin_key)]),
            Needs::PersonAdmin => allowed.push(("admin", &a.admin)),
            Needs::Owner | Needs::PersonOwner => {}
        }
        for (who, agent) in allowed {
            let (status, problem) = send(agent, route.method, &path, "application/json", "{broken").await;
            assert_eq!(status, 400, "{who}: {} {path}, broken JSON: {problem}", route.method);

            let (status, problem) = send(agent, route.method, &path, "text/plain", "hello").await;
            assert_eq!(status, 415, "{who}: {} {path}, not JSON: {problem}", route.method);

            let (body, field) = route.wrong_field;
            let (status, problem) = send(agent, route.method, &path, "application/json", body).await;
            assert_eq!(status, 422, "{who}: {} {path} with {body}: {problem}", route.method);
            let named: Vec<&str> =
                problem["errors"].as_array().unwrap().iter().filter_map(|e| e["field"].as_str()).collect();
            assert_eq!(named, [field], "{who}: {} {path}: {problem}", route.method);
        }
    }
    app.stop().await;
}

/// A body-reading agency route added without a row here would go untested.
async fn the_table_covers_every_body_reading_agency_route(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let document: Value = app.get("/api/v1/openapi.json").await.json().await.unwrap();
    let mut documented = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if path.starts_with("/api/v1/agencies/") && operation.get("requestBody").is_some() {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    let tested: BTreeSet<(String, String)> =
        ROUTES.iter().map(|r| (r.method.to_owned(), r.path.to_owned())).collect();
    assert_eq!(documented, tested, "every body-reading agency route is in the table");
    app.stop().await;
}
