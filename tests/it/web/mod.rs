//! The agency web app (issue #8). `pages` and friends drive it over plain HTTP, as a browser
//! without JavaScript would (forms, redirects, cookies); `browser` drives a real Chromium.

mod account;
mod browser;
mod calls;
mod client;
mod demo_story;
mod forms;
mod mail_story;
mod operator;
mod pages;
mod people;
mod setup;
mod setup_story;
mod stage_names;
mod story;
mod widget;

use reqwest::Response;
use scraper::{Html, Selector};

use crate::support::Agent;

/// A page as a person sees it.
pub struct Page {
    pub status: u16,
    pub html: Html,
    pub text: String,
    pub csp: Option<String>,
}

impl Page {
    pub async fn read(response: Response) -> Page {
        let status = response.status().as_u16();
        let csp = response.headers().get("content-security-policy").map(|v| v.to_str().unwrap().to_owned());
        let text = response.text().await.unwrap();
        Page { status, html: Html::parse_document(&text), text, csp }
    }

    /// Every element matching a CSS selector, as its text.
    pub fn all(&self, selector: &str) -> Vec<String> {
        let selector = Selector::parse(selector).unwrap();
        self.html.select(&selector).map(|e| e.text().collect::<String>().trim().to_owned()).collect()
    }

    /// The first element matching `selector`'s text; panics if none.
    pub fn one(&self, selector: &str) -> String {
        self.all(selector).into_iter().next().unwrap_or_else(|| panic!("no {selector} in:\n{}", self.text))
    }

    /// An attribute of the first element matching `selector`.
    pub fn attr(&self, selector: &str, name: &str) -> Option<String> {
        let selector = Selector::parse(selector).unwrap();
        self.html.select(&selector).next().and_then(|e| e.value().attr(name).map(str::to_owned))
    }

    /// The value of the form field named `name`.
    pub fn field(&self, name: &str) -> Option<String> {
        self.attr(&format!("[name=\"{name}\"]"), "value")
    }
}

/// GET a page (redirects are not followed: they are part of what is checked).
pub async fn get(agent: &Agent, path: &str) -> Page {
    Page::read(agent.http.get(format!("{}{path}", agent.base)).send().await.unwrap()).await
}

/// Posts a form as the page would, with the session's CSRF token added.
pub async fn submit(agent: &Agent, path: &str, fields: &[(&str, &str)]) -> Response {
    let mut form: Vec<(&str, &str)> = fields.to_vec();
    if let Some(csrf) = &agent.csrf {
        form.push(("csrf", csrf));
    }
    agent.http.post(format!("{}{path}", agent.base)).form(&form).send().await.unwrap()
}

/// Where a redirect points.
pub fn location(response: &Response) -> String {
    response.headers().get("location").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
}
