//! The activity page names stages ("Stage 2 (Sales)") from a per-account cache: an open page
//! refreshing every 10 s does not spend the account's Kommo rate budget on the pipelines list.

use super::get;
use crate::kommo::ACME;
use crate::on_both_engines;
use crate::pipeline::Shop;
use crate::support::Engine;

on_both_engines!(refreshing_the_activity_page_asks_kommo_for_the_pipelines_once);

fn pipeline_calls(shop: &Shop) -> usize {
    shop.kommo
        .requests(ACME)
        .iter()
        .filter(|r| r.method == "GET" && r.path == "/api/v4/leads/pipelines")
        .count()
}

async fn refreshing_the_activity_page_asks_kommo_for_the_pipelines_once(engine: Engine) {
    let shop = Shop::open(engine).await;
    shop.lead(501, "250");
    shop.to_invoice(501).await;
    shop.app.queue_settled().await;
    let page = format!("/app/agencies/{}/clients/{}/activity", shop.owner.agency, shop.client);
    let before = pipeline_calls(&shop);
    for refresh in 0..6 {
        let shown = get(&shop.owner.agent, &page).await;
        assert_eq!(shown.status, 200);
        assert!(shown.text.contains("in stage Stage 2 (Sales)"), "refresh {refresh}: {}", shown.text);
    }
    assert_eq!(pipeline_calls(&shop) - before, 1, "six refreshes, one pipelines call");
    shop.app.stop().await;
}
