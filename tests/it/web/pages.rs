//! Rules every page of the web app keeps, checked by visiting all of them for a fully set-up
//! agency (Kommo connected, keys set, a deal paid): labelled controls, one heading, CSRF on
//! every form, a strict CSP with nothing inline, and nothing fetched from another origin.

use std::collections::{BTreeSet, VecDeque};

use scraper::{ElementRef, Selector};

use super::{Page, get};
use crate::fakes::flutterwave::{Outcome, Payment, Shape, Signature};
use crate::on_both_engines;
use crate::pipeline::{SECRET, Shop, eventually};
use crate::support::Engine;

on_both_engines!(every_page_is_labelled_protected_and_self_contained);

fn select(selector: &str) -> Selector {
    Selector::parse(selector).unwrap()
}

/// Broken rules on one page, as readable lines.
fn broken_rules(path: &str, page: &Page, csrf: Option<&str>) -> Vec<String> {
    let mut broken = Vec::new();
    let mut fail = |rule: String| broken.push(format!("{path}: {rule}"));
    let csp = page.csp.clone().unwrap_or_default();
    for rule in ["default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'"] {
        if !csp.contains(rule) {
            fail(format!("CSP lacks {rule}: {csp}"));
        }
    }
    if page.attr("html", "lang").is_none() {
        fail("<html> has no lang".into());
    }
    if page.attr("meta[name=viewport]", "content").is_none() {
        fail("no viewport meta (phones)".into());
    }
    let headings = page.all("h1").len();
    if headings != 1 {
        fail(format!("{headings} <h1> elements"));
    }
    let labels: BTreeSet<String> = page
        .html
        .select(&select("label[for]"))
        .filter_map(|l| l.value().attr("for").map(str::to_owned))
        .collect();
    for control in page.html.select(&select("input, select, textarea")) {
        let kind = control.value().attr("type").unwrap_or("text");
        if ["hidden", "submit", "button"].contains(&kind) {
            continue;
        }
        let named =
            control.value().attr("aria-label").is_some() || control.value().attr("aria-labelledby").is_some();
        let labelled = control.value().attr("id").is_some_and(|id| labels.contains(id));
        let wrapped = control.ancestors().filter_map(ElementRef::wrap).any(|a| a.value().name() == "label");
        if !(named || labelled || wrapped) {
            fail(format!("unlabelled control {}", control.html()));
        }
    }
    for form in page.html.select(&select("form")) {
        let method = form.value().attr("method").unwrap_or("get").to_lowercase();
        let action = form.value().attr("action").unwrap_or("");
        if !action.starts_with('/') || action.starts_with("//") {
            fail(format!("form posts to another origin or nowhere: {action:?}"));
        }
        if method == "post"
            && let Some(csrf) = csrf
        {
            let token = form.select(&select("input[name=csrf]")).next().and_then(|i| i.value().attr("value"));
            if token != Some(csrf) {
                fail(format!("POST form {action} without the session's CSRF token"));
            }
        }
    }
    for element in page.html.select(&select("*")) {
        let value = element.value();
        if value.attr("style").is_some() {
            fail(format!("inline style on <{}>", value.name()));
        }
        if let Some((name, _)) = value.attrs().find(|(name, _)| name.starts_with("on")) {
            fail(format!("inline handler {name} on <{}>", value.name()));
        }
        if value.name() == "script" && value.attr("src").is_none() {
            fail("inline <script>".into());
        }
        for attr in ["src", "href", "action", "formaction", "srcset"] {
            if let Some(url) = value.attr(attr) {
                let elsewhere = url.contains("://") || url.starts_with("//");
                // Links a person follows may lead elsewhere (none do today); nothing loads from there.
                if elsewhere && value.name() != "a" {
                    fail(format!("<{} {attr}={url}> loads from another origin", value.name()));
                }
            }
        }
        if value.name() == "img" && value.attr("alt").is_none() {
            fail("<img> without alt".into());
        }
        if value.name() == "svg"
            && value.attr("role") == Some("img")
            && element.select(&select("title")).next().is_none()
        {
            fail("<svg role=img> without a <title>".into());
        }
    }
    broken
}

async fn every_page_is_labelled_protected_and_self_contained(engine: Engine) {
    let shop = Shop::open(engine).await;
    shop.lead(1042, "1234.56");
    shop.to_invoice(1042).await;
    eventually(std::time::Duration::from_secs(20), "a link", || async { shop.notes(1042).len() == 1 }).await;
    let created = shop.flw.created(SECRET);
    let paid = shop.flw.pay(&created[0].tx_ref, Payment::by(Outcome::Successful, "mpesa"));
    assert_eq!(shop.flw.deliver(&shop.flw_hook, &paid, Shape::V3, Signature::VerifHash).await, 200);
    eventually(std::time::Duration::from_secs(20), "the deal won", || async { shop.stage(1042) == 142 })
        .await;

    let agent = &shop.owner.agent;
    let csrf = agent.csrf.clone().unwrap();
    let start = format!("/app/agencies/{}", shop.owner.agency);
    let mut queue = VecDeque::from([start.clone(), "/app/account".to_owned()]);
    let mut seen = BTreeSet::new();
    let mut broken = Vec::new();
    while let Some(path) = queue.pop_front() {
        if !seen.insert(path.clone()) || seen.len() > 60 {
            continue;
        }
        let page = get(agent, &path).await;
        assert_eq!(page.status, 200, "{path}: {}", page.text);
        broken.extend(broken_rules(&path, &page, Some(&csrf)));
        for link in page.html.select(&select("a[href]")) {
            let href = link.value().attr("href").unwrap_or("");
            let href = href.split('#').next().unwrap_or("");
            // Every page of this agency, once each (queries only for the first variant seen).
            let bare = href.split('?').next().unwrap_or("");
            if href.starts_with(&start) && !seen.iter().any(|s| s.split('?').next() == Some(bare)) {
                queue.push_back(href.to_owned());
            }
        }
    }
    for public in ["/login", "/signup"] {
        let page = get(&shop.app.anonymous(), public).await;
        // Forms of people not logged in rely on the same-origin check instead of a token.
        broken.extend(broken_rules(public, &page, None));
    }
    let client = format!("{start}/clients/{}", shop.client);
    for page in [
        client.clone(),
        format!("{client}/settings"),
        format!("{client}/activity"),
        format!("{start}/members"),
        format!("{start}/api-keys"),
        format!("{start}/audit"),
        format!("{start}/telemetry"),
    ] {
        assert!(
            seen.iter().any(|s| s.split('?').next() == Some(page.as_str())),
            "{page} not reached from the home page: {seen:?}"
        );
    }
    assert!(broken.is_empty(), "pages that break the rules:\n{}", broken.join("\n"));
    shop.app.stop().await;
}
