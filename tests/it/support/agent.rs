//! Someone using the API: a browser-like client with a cookie jar and CSRF token, or a script
//! with an API key.

use reqwest::{Method, Response};
use serde_json::{Value, json};

use super::TestApp;

/// A strong password the strength check accepts; tests that are about passwords use their own.
pub const PASSWORD: &str = "violet tractor mango 1847 lagoon";

#[derive(Clone)]
pub struct Agent {
    pub http: reqwest::Client,
    pub base: String,
    pub csrf: Option<String>,
    pub bearer: Option<String>,
}

impl Agent {
    pub fn new(base: String) -> Agent {
        pipepay::install_tls_provider();
        let http = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("http client");
        Agent { http, base, csrf: None, bearer: None }
    }

    pub async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Response {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(csrf) = &self.csrf {
            request = request.header("x-csrf-token", csrf);
        }
        if let Some(bearer) = &self.bearer {
            request = request.bearer_auth(bearer);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send().await.expect("request reaches pipepay")
    }

    pub async fn get(&self, path: &str) -> Response {
        self.send(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Response {
        self.send(Method::POST, path, Some(&body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Response {
        self.send(Method::PUT, path, Some(&body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Response {
        self.send(Method::PATCH, path, Some(&body)).await
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.send(Method::DELETE, path, None).await
    }

    /// GET that must succeed, returning the JSON body.
    pub async fn json(&self, path: &str) -> Value {
        let response = self.get(path).await;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "GET {path}: {status} {body}");
        body
    }

    /// A request that must answer `status`, returning the JSON body (or null).
    pub async fn expect(&self, method: Method, path: &str, body: Option<Value>, status: u16) -> Value {
        let response = self.send(method.clone(), path, body.as_ref()).await;
        let got = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        assert_eq!(got, status, "{method} {path}: {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// Logs in; keeps the session cookie and CSRF token.
    pub async fn log_in(&mut self, email: &str, password: &str) -> Value {
        let me = self
            .expect(
                Method::POST,
                "/api/v1/auth/login",
                Some(json!({"email": email, "password": password})),
                200,
            )
            .await;
        self.csrf = me["csrf_token"].as_str().map(str::to_owned);
        me
    }
}

/// A signed-up agency owner.
pub struct Owner {
    pub agent: Agent,
    pub email: String,
    pub agency: String,
    pub user: String,
}

impl TestApp {
    pub fn anonymous(&self) -> Agent {
        Agent::new(self.url(""))
    }

    /// An agent authenticating with an API key only.
    pub fn with_key(&self, key: &str) -> Agent {
        Agent { bearer: Some(key.to_owned()), ..Agent::new(self.url("")) }
    }

    /// Signs up `email` with a new agency named `agency`.
    pub async fn sign_up(&self, email: &str, agency: &str) -> Owner {
        let mut agent = self.anonymous();
        let me = agent
            .expect(
                Method::POST,
                "/api/v1/auth/signup",
                Some(json!({"email": email, "password": PASSWORD, "agency_name": agency})),
                201,
            )
            .await;
        agent.csrf = me["csrf_token"].as_str().map(str::to_owned);
        Owner {
            agent,
            email: email.to_lowercase(),
            agency: me["agencies"][0]["id"].as_str().expect("agency id").to_owned(),
            user: me["user"]["id"].as_str().expect("user id").to_owned(),
        }
    }

    /// Invites `email` into the owner's agency with `role` and has them accept as a new user.
    pub async fn add_member(&self, owner: &Owner, email: &str, role: &str) -> Agent {
        let invited = owner
            .agent
            .expect(
                Method::POST,
                &format!("/api/v1/agencies/{}/invitations", owner.agency),
                Some(json!({"email": email, "role": role})),
                201,
            )
            .await;
        let mut agent = self.anonymous();
        agent
            .expect(
                Method::POST,
                "/api/v1/invitations/accept",
                Some(json!({"token": invited["token"], "password": PASSWORD})),
                201,
            )
            .await;
        agent.log_in(email, PASSWORD).await;
        agent
    }

    /// Creates a client account; returns its id and ingress token.
    pub async fn add_client(&self, owner: &Agent, agency: &str, name: &str) -> (String, String) {
        let created = owner
            .expect(
                Method::POST,
                &format!("/api/v1/agencies/{agency}/clients"),
                Some(json!({ "name": name })),
                201,
            )
            .await;
        (
            created["client"]["id"].as_str().expect("client id").to_owned(),
            created["ingress_token"].as_str().expect("ingress token").to_owned(),
        )
    }

    /// Creates an API key with `role`; returns its id and the key.
    pub async fn add_api_key(&self, owner: &Agent, agency: &str, role: &str) -> (String, String) {
        let created = owner
            .expect(
                Method::POST,
                &format!("/api/v1/agencies/{agency}/api-keys"),
                Some(json!({ "name": format!("{role} automation"), "role": role })),
                201,
            )
            .await;
        (
            created["api_key"]["id"].as_str().expect("key id").to_owned(),
            created["key"].as_str().expect("key").to_owned(),
        )
    }
}
