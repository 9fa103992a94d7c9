//! Forms as people meet them (issue #15): every error at once, each a sentence next to its field
//! with a summary on top (and the same sentences, by field, in the API); a form posted after the
//! session ended is kept through logging in again; on the settings page each label sits by its
//! own control at every width, and trigger stages are checkboxes grouped by pipeline.

use reqwest::Method;
use serde_json::json;

use super::browser::story;
use super::{Page, get, location, submit};
use crate::fakes::kommo::FakeKommo;
use crate::kommo::{ACME, app_with_kommo};
use crate::on_both_engines;
use crate::pipeline::{INVOICE, SALES, Shop, open_acme};
use crate::support::agent::PASSWORD;
use crate::support::{Engine, TestApp};

on_both_engines!(
    a_form_shows_every_error_at_once_as_sentences,
    the_api_names_every_field_with_a_sentence,
    a_form_posted_after_the_session_ended_is_kept_through_log_in,
);

/// A sentence: a capital first, a full stop (or other end mark) last, no "is required" stubs.
fn assert_sentence(message: &str) {
    let first = message.chars().next().unwrap_or(' ');
    assert!(first.is_uppercase(), "not a sentence: {message:?}");
    assert!(message.ends_with('.') || message.ends_with('?'), "not a sentence: {message:?}");
    assert!(!message.contains("is required"), "{message:?}");
}

async fn a_form_shows_every_error_at_once_as_sentences(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let visitor = app.anonymous();
    let refused = visitor
        .http
        .post(app.url("/signup"))
        .form(&[("agency_name", " "), ("email", "ada@"), ("password", "short")])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 422);
    let page = Page::read(refused).await;
    assert_eq!(page.one("[id=\"agency_name-error\"]"), "Enter your agency's name.");
    assert_eq!(page.one("#email-error"), "Enter an email address like name@example.com.");
    assert_eq!(page.one("#password-error"), "Use at least 10 characters.");
    // The summary on top lists all three, each a link to its field.
    let summary = page.all("#form-errors li a");
    assert_eq!(summary.len(), 3, "{summary:?}");
    for (field, message) in [("agency_name", "Enter your agency's name."), ("email", ""), ("password", "")] {
        let href = page.attr(&format!("#form-errors a[href=\"#{field}\"]"), "href");
        assert!(href.is_some(), "the summary links to {field}: {}", page.text);
        assert!(summary.iter().any(|s| s.contains(message)));
    }
    for message in page.all(".field-error") {
        assert_sentence(&message);
    }
    app.stop().await;
}

async fn the_api_names_every_field_with_a_sentence(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let refused = app
        .anonymous()
        .send(
            Method::POST,
            "/api/v1/auth/signup",
            Some(&json!({"email": "", "password": "short", "agency_name": ""})),
        )
        .await;
    assert_eq!(refused.status(), 422);
    let body: serde_json::Value = refused.json().await.unwrap();
    let errors = body["errors"].as_array().unwrap();
    let fields: Vec<&str> = errors.iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["email", "agency_name", "password"], "every field at once: {body}");
    assert_eq!(errors[0]["message"], "Enter an email address.");
    assert_eq!(errors[1]["message"], "Enter your agency's name.");
    for error in errors {
        assert_sentence(error["message"].as_str().unwrap());
    }

    let owner = app.sign_up("sentences@agency.co.ke", "Sentences").await;
    let (client, _) = app.add_client(&owner.agent, &owner.agency, "Shop").await;
    let path = format!("/api/v1/agencies/{}/clients/{client}/settings", owner.agency);
    let bad = json!({
        "display_name": "",
        "currency": "BTC",
        "tax": {"rate_percent": "150"},
        "checkout": {"payment_options": ["card", "bitcoin"], "session_duration_minutes": 0,
                     "redirect_url": "http://shop.example"},
        "notes": {"link_created": "Pay {nothing}"}
    });
    let refused = owner.agent.put(&path, bad).await;
    assert_eq!(refused.status(), 422);
    let body: serde_json::Value = refused.json().await.unwrap();
    let errors = body["errors"].as_array().unwrap();
    let message = |field: &str| {
        errors.iter().find(|e| e["field"] == field).map(|e| e["message"].as_str().unwrap().to_owned())
    };
    assert_eq!(message("display_name").as_deref(), Some("Enter a name."));
    assert_eq!(
        message("checkout.redirect_url").as_deref(),
        Some("Use an address that starts with https://.")
    );
    assert_eq!(
        message("checkout.session_duration_minutes").as_deref(),
        Some("Enter between 1 and 1440 minutes.")
    );
    for field in ["currency", "tax.rate_percent", "checkout.payment_options[1]", "notes.link_created"] {
        assert!(message(field).is_some(), "{field} in {body}");
    }
    for error in errors {
        assert_sentence(error["message"].as_str().unwrap());
    }
    app.stop().await;
}

/// Ends every session of the app's users, as expiry would.
async fn end_sessions(app: &TestApp) {
    let mut tx = app.db.write().await.unwrap();
    pipepay::on_tx!(&mut tx, c => sqlx::query("DELETE FROM sessions").execute(c).await.map(|_| ())).unwrap();
    tx.commit().await.unwrap();
}

async fn a_form_posted_after_the_session_ended_is_kept_through_log_in(engine: Engine) {
    let fake = FakeKommo::start().await;
    let app = app_with_kommo(engine, &fake, &[]).await;
    open_acme(&fake);
    let owner = app.sign_up("kept@agency.co.ke", "Kept Agency").await;
    let (client, _) = app.add_client(&owner.agent, &owner.agency, "Acme Kenya").await;
    let settings = format!("/app/agencies/{}/clients/{client}/settings", owner.agency);
    let agent = &owner.agent;
    assert_eq!(get(agent, &settings).await.status, 200);

    end_sessions(&app).await;
    let typed = [
        ("display_name", "Acme Kenya Ltd"),
        ("checkout.title", "Acme checkout"),
        ("notes.link_created", "Pay {amount} {currency}:\n{link}"),
        ("tax.rate_percent", "16"),
        // Never kept, whatever form carries it.
        ("secret_key", "FLWSECK_TEST-0a1b2c3d4e5f60718293a4b5c6d7e8f9-X"),
    ];
    let posted = agent
        .http
        .post(format!("{}{settings}", agent.base))
        .header("referer", format!("{}{settings}", agent.base))
        .form(&[typed.as_slice(), &[("csrf", agent.csrf.as_deref().unwrap())][..]].concat())
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 303);
    assert_eq!(location(&posted), "/login?next=%2Fapp%2Fresume");
    let stash = posted
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("pipepay_stash="))
        .expect("the form is kept");
    assert!(stash.contains("HttpOnly") && stash.contains("Max-Age=1800"), "{stash}");
    assert!(!stash.contains("Acme") && !stash.contains("FLWSECK"), "sealed: {stash}");

    // The log-in page says why the person is there.
    let login = get(agent, &location(&posted)).await;
    assert_eq!(
        login.one("#session-expired"),
        "Your session expired; log in to continue - your changes are kept."
    );
    assert_eq!(login.field("next").as_deref(), Some("/app/resume"));
    let logged_in = agent
        .http
        .post(format!("{}/login", agent.base))
        .form(&[("email", "kept@agency.co.ke"), ("password", PASSWORD), ("next", "/app/resume")])
        .send()
        .await
        .unwrap();
    assert_eq!(location(&logged_in), "/app/resume");

    // The kept form, ready to send again with the new session's token; the key is not in it.
    let resume = get(agent, "/app/resume").await;
    assert_eq!(resume.status, 200);
    assert_eq!(resume.attr("#resume-form", "action").as_deref(), Some(settings.as_str()));
    assert_eq!(resume.field("display_name").as_deref(), Some("Acme Kenya Ltd"));
    assert_eq!(resume.field("notes.link_created").as_deref(), Some("Pay {amount} {currency}:\n{link}"));
    let csrf = resume.field("csrf").unwrap();
    assert!(!csrf.is_empty() && Some(csrf.as_str()) != agent.csrf.as_deref(), "the new session's token");
    assert!(resume.field("secret_key").is_none() && !resume.text.contains("FLWSECK"));
    assert!(resume.one("#resume-dropped").contains("never kept"));
    assert_eq!(resume.attr("#resume-form a", "href").as_deref(), Some(settings.as_str()));
    // Spent: a second visit goes home.
    assert_eq!(location(&agent.http.get(format!("{}/app/resume", agent.base)).send().await.unwrap()), "/app");

    let fields: Vec<(String, String)> = resume
        .html
        .select(&scraper::Selector::parse("#resume-form input[type=hidden]").unwrap())
        .map(|e| (e.value().attr("name").unwrap().to_owned(), e.value().attr("value").unwrap().to_owned()))
        .collect();
    let sent = agent.http.post(format!("{}{settings}", agent.base)).form(&fields).send().await.unwrap();
    assert_eq!(location(&sent), format!("{settings}?done=settings-saved"));
    let stored = agent.json(&format!("/api/v1/agencies/{}/clients/{client}/settings", owner.agency)).await;
    assert_eq!(stored["display_name"], "Acme Kenya Ltd");
    assert_eq!(stored["checkout"]["title"], "Acme checkout");
    assert_eq!(stored["tax"]["rate_percent"].to_string().trim_matches('"'), "16");

    // Nothing typed worth keeping (a log-out button): plain log-in, no cookie.
    end_sessions(&app).await;
    let button = submit(agent, &format!("/app/agencies/{}/clients/{client}/delete", owner.agency), &[]).await;
    assert_eq!(button.status(), 303);
    assert_eq!(location(&button), "/login?next=%2Fapp");
    assert!(
        !button.headers().get_all("set-cookie").iter().any(|c| c.to_str().unwrap().contains("pipepay_stash"))
    );
    app.stop().await;
}

/// Each `label[for]` on the settings form is next to its own control (above it, or beside a
/// checkbox) and nearer to it than to any other control: at a desktop, a tablet and a phone
/// width. Trigger stages are checkboxes in a fieldset per pipeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(browser_tests),
    ignore = "install Debian's chromium and chromium-driver to run browser stories"
)]
async fn settings_labels_sit_by_their_own_controls_at_every_width() {
    let shop = Shop::open(Engine::Sqlite).await;
    shop.kommo.add_pipeline(ACME, 8001, "Renewals", &[8002, 8003]);
    let settings =
        shop.app.url(&format!("/app/agencies/{}/clients/{}/settings", shop.owner.agency, shop.client));
    let login = shop.app.url("/login");
    story("settings_labels", |browser| async move {
        browser.goto(&login).await;
        browser.fill("#email", "shop@agency.co.ke").await;
        browser.fill("#password", PASSWORD).await;
        browser.press("Log in").await;
        browser.wait_for_text("Client accounts", false).await;
        for (width, height) in [(1280, 1000), (800, 1000), (375, 800)] {
            browser.client.set_window_size(width, height).await.unwrap();
            browser.goto(&settings).await;
            browser.find("fieldset.pipeline").await;
            let misplaced = browser.client.execute(LABELS_BY_THEIR_CONTROLS, vec![]).await.unwrap();
            let misplaced: Vec<String> = serde_json::from_value(misplaced).unwrap();
            assert!(misplaced.is_empty(), "at {width}px: {misplaced:#?}");
        }
        let groups = browser.client.execute(TRIGGER_GROUPS, vec![]).await.unwrap();
        let groups: Vec<(String, Vec<String>)> = serde_json::from_value(groups).unwrap();
        let names: Vec<&str> = groups.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["Sales", "Renewals"], "a fieldset per pipeline");
        for (i, stages) in [
            vec![format!("{SALES}:{}", crate::pipeline::NEW), format!("{SALES}:{INVOICE}")],
            vec!["8001:8002".to_owned(), "8001:8003".to_owned()],
        ]
        .into_iter()
        .enumerate()
        {
            for stage in stages {
                assert!(groups[i].1.contains(&stage), "{stage} in {:?}", groups[i]);
            }
            assert!(
                groups[i].1.iter().all(|v| v.starts_with(&groups[i].1[0][..5])),
                "one pipeline per group"
            );
        }
        // Ticking is a click, not Ctrl-click; saving keeps it.
        let new = format!("#trigger-{SALES}-{}", crate::pipeline::NEW);
        let before = browser.find(&new).await.prop("checked").await.unwrap();
        assert_eq!(before.as_deref(), Some("false"));
        browser.click(&new).await;
        browser.press("Save settings").await;
        browser.wait_for_text("Settings saved.", false).await;
        for stage in [new, format!("#trigger-{SALES}-{INVOICE}")] {
            let ticked = browser.find(&stage).await.prop("checked").await.unwrap();
            assert_eq!(ticked.as_deref(), Some("true"), "{stage}");
        }
    })
    .await;
    shop.app.stop().await;
}

/// Returns one line per label that is not by its own control.
const LABELS_BY_THEIR_CONTROLS: &str = r#"
const shown = (e) => { const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0 ? r : null; };
const gap = (a, b) => Math.hypot(Math.max(0, a.left - b.right, b.left - a.right),
                                 Math.max(0, a.top - b.bottom, b.top - a.bottom));
const form = document.querySelector("form[action$='/settings']");
const controls = [...form.querySelectorAll("input, select, textarea")].filter(shown);
const out = [];
for (const label of form.querySelectorAll("label[for]")) {
  const l = shown(label);
  const control = document.getElementById(label.htmlFor);
  if (!l) continue;
  if (!control || !shown(control)) { out.push(label.htmlFor + ": no visible control"); continue; }
  const c = shown(control);
  const own = gap(l, c);
  const above = l.bottom <= c.top + 1 && l.left < c.right && c.left < l.right;
  const middle = (r) => (r.top + r.bottom) / 2;
  const beside = Math.abs(middle(l) - middle(c)) < Math.max(l.height, c.height) / 2
                 && (l.left >= c.right - 1 || c.left >= l.right - 1);
  if (own > 24 || !(above || beside)) {
    out.push(label.htmlFor + ": " + own.toFixed(0) + "px from its control, above=" + above + " beside=" + beside);
    continue;
  }
  for (const other of controls) {
    if (other !== control && gap(l, shown(other)) + 0.5 < own) {
      out.push(label.htmlFor + ": nearer to " + (other.id || other.name));
      break;
    }
  }
}
return out;
"#;

/// `[[pipeline, [stage values]]]` of the trigger checkboxes.
const TRIGGER_GROUPS: &str = r#"
if (document.querySelector("select[multiple]")) return "a multi-select is left";
return [...document.querySelectorAll("fieldset.pipeline")].map((f) => [
  f.querySelector("legend").textContent.trim(),
  [...f.querySelectorAll("input[name='trigger.stage_ids']")].map((i) => i.type === "checkbox" ? i.value : "not a checkbox"),
]);
"#;
