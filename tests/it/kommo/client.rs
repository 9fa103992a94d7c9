//! The client's reading of Kommo: exact prices, both contact shapes, 204s, moves with the
//! pipeline, notes, fields, and what 402, 403, 500 and timeouts mean.

use std::time::{Duration, Instant};

use pipepay::ids::{ClientId, LeadId};
use pipepay::kommo::KommoError;
use pipepay::kommo::tokens::Session;
use rust_decimal::Decimal;
use serde_json::json;

use super::{ACME, World};
use crate::fakes::kommo::{Fault, LeadSpec};
use crate::on_both_engines;
use crate::support::Engine;

on_both_engines!(leads_contacts_notes_and_moves, failures_mean_what_kommo_means);

async fn leads_contacts_notes_and_moves(engine: Engine) {
    let world = World::new(engine).await;
    world.connect(&world.client, ACME).await;
    let client = ClientId(world.client.parse().unwrap());
    world.fake.add_contact(ACME, 501, "Jane Doe", Some("jane@example.com"), Some("+254700000001"));
    world.fake.add_contact_json(
        ACME,
        json!({"id": 502, "name": "Old Style", "custom_fields_values": [
            {"field_id": 5, "field_code": "EMAIL", "values": [{"value": "old@example.com", "enum": "WORK"}]}]}),
    );
    world.fake.add_lead_custom_field(ACME, 900, "Payment link", "url");
    world.fake.add_lead(
        ACME,
        LeadSpec {
            id: 7001001,
            name: "Order #1042".into(),
            price: 1234,
            price_with_minor_units: Some("1234.56".into()),
            pipeline_id: 7001,
            status_id: 7002,
            contact_ids: vec![502, 501],
            custom_fields_values: None,
        },
    );
    let kommo = world.app.kommo.clone();
    let session = Session::new(client);
    let lead = kommo.lead(&session, LeadId(7001001)).await.unwrap().expect("the lead exists");
    assert_eq!(lead.price, "1234.56".parse::<Decimal>().unwrap(), "the exact price, not the truncated one");
    assert_eq!(lead.pipeline_id, 7001);
    assert_eq!(lead.contact_ids.len(), 2);
    assert!(kommo.lead(&session, LeadId(404404)).await.unwrap().is_none(), "204 means not found");
    assert!(kommo.contact(&session, 404404).await.unwrap().is_none());
    let old = kommo.contact(&session, 502).await.unwrap().unwrap();
    assert_eq!(old.emails, ["old@example.com"], "the `enum` spelling reads too");
    let jane = kommo.contact(&session, 501).await.unwrap().unwrap();
    assert_eq!(
        (jane.emails.as_slice(), jane.phones.as_slice()),
        (&["jane@example.com".to_owned()][..], &["+254700000001".to_owned()][..])
    );

    kommo.add_note(&session, LeadId(7001001), "Payment link: https://pay.example/x").await.unwrap();
    assert_eq!(world.fake.notes(ACME, 7001001)[0].text, "Payment link: https://pay.example/x");
    kommo.set_lead_field(&session, LeadId(7001001), 900, "https://pay.example/x").await.unwrap();
    kommo.move_lead(&session, LeadId(7001001), 7001, 142).await.expect("a move to won carries its pipeline");
    let moved = world.fake.lead(ACME, 7001001).unwrap();
    assert_eq!(moved["status_id"], 142);
    assert!(moved.to_string().contains("https://pay.example/x"), "{moved}");
    let fields = kommo.lead_fields(client).await.unwrap();
    assert!(fields.iter().any(|f| f.id == 900 && f.field_type == "url"));
    world.app.stop().await;
}

async fn failures_mean_what_kommo_means(engine: Engine) {
    let world = World::with(engine, &["--kommo-timeout", "1"]).await;
    world.connect(&world.client, ACME).await;
    let client = ClientId(world.client.parse().unwrap());
    let kommo = world.app.kommo.clone();

    world.fake.fail_next(ACME, vec![Fault::PaymentRequired]);
    assert!(matches!(kommo.pipelines(client).await, Err(KommoError::PaymentRequired)));
    assert_eq!(world.connection(&world.client).await["health"], "payment_required");
    kommo.pipelines(client).await.unwrap();
    assert_eq!(world.connection(&world.client).await["health"], "active", "a success heals it");

    world.fake.fail_next(ACME, vec![Fault::Forbidden]);
    assert!(matches!(kommo.pipelines(client).await, Err(KommoError::Blocked(_))));
    assert_eq!(world.connection(&world.client).await["health"], "blocked");

    world.fake.fail_next(ACME, vec![Fault::ServerError]);
    let unavailable = kommo.pipelines(client).await;
    assert!(matches!(&unavailable, Err(e) if e.is_transient()), "{unavailable:?}");

    world.fake.fail_next(ACME, vec![Fault::Timeout]);
    let started = Instant::now();
    let timed_out = kommo.pipelines(client).await;
    assert!(matches!(timed_out, Err(KommoError::Timeout)), "{timed_out:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "every call has a timeout");
    world.app.stop().await;
}
