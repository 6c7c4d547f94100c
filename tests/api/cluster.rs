//! The gate against a Redis Cluster: the duplicate-2000 burst over many slots,
//! spread across three masters, exact.

use slotgate::metrics::Metrics;

use crate::{
    bursts::{Decided, assert_exact_outcome},
    fault_kit::PrivateRedisCluster,
    helpers::{burst, by_hand, generous_timeouts, reserve, slot_at, spawn_app_with},
};

#[tokio::test(flavor = "multi_thread")]
async fn the_duplicate_burst_over_30_slots_on_a_three_master_cluster_is_exact() {
    let cluster = PrivateRedisCluster::start(3).await;
    let app = spawn_app_with(|c| {
        c.redis_url = cluster.urls();
        c.redis_cluster = true;
        generous_timeouts(c);
        by_hand(c);
    })
    .await;
    let slots: Vec<_> = (0..30).map(|i| slot_at(&format!("{:02}:{:02}", 8 + i / 4, (i % 4) * 15))).collect();
    app.open(&slots.iter().map(|s| (s.clone(), 40)).collect::<Vec<_>>()).await;

    // duplicate-2000's 2,000 users, three clicks each, spread over the 30 slots.
    let requests: Vec<_> = (0..2_000)
        .flat_map(|u| (0..3).map(move |c| (u, c)))
        .map(|(u, c)| reserve(&format!("cl-u{u}-c{c}"), &format!("cl-user-{u}"), &slots[u % 30], 4))
        .collect();
    let checkouts = Metrics::read(&app.metrics.db_checkouts);
    let results = burst(app.addr, requests.clone(), 8).await;
    assert_exact_outcome(&app, Decided::AtTheGate, checkouts, &requests, &results, &slots).await;

    // The slots' keys really are spread over every master.
    let keys = cluster.keys_per_master();
    assert!(keys.iter().all(|&n| n > 0), "keys per master: {keys:?}");
    // And the reconciler, working slot by slot, finds nothing to correct.
    assert_eq!(app.booking.reconcile(None).await.unwrap().corrections.len(), 0);
}
