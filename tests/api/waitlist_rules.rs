//! The waitlist's offer rule against the real service: parties that do not
//! fit are passed over (by a later entry, or by seats going public), at
//! most as often as the rule allows, and then seats add up for them.

use slotgate::pb;

use crate::{
    helpers::{reserve, slot_at},
    waitlist::{db_waitlist_seats, entry, join, leave, open_with, reservation, spawn},
};

#[tokio::test(flavor = "multi_thread")]
async fn a_party_passed_over_as_often_as_the_rule_allows_gets_the_seats_set_aside() {
    let app = spawn().await;
    let slot = slot_at("21:00");
    open_with(&app, &slot, 6, None).await;
    let holders: Vec<pb::Reservation> = futures_util::future::join_all(
        (0..6).map(|i| app.create(reserve(&format!("r-{i}"), &format!("holder-{i}"), &slot, 1))),
    )
    .await
    .into_iter()
    .map(Result::unwrap)
    .collect();
    // A party of 5 first in line, then parties of 1.
    let big = join(&app, "j-big", "big", &slot, 5).await.unwrap();
    let small: Vec<pb::WaitlistEntry> = {
        let mut v = Vec::new();
        for i in 0..6 {
            v.push(join(&app, &format!("j-s{i}"), &format!("small-{i}"), &slot, 1).await.unwrap());
        }
        v
    };

    // Each seat that comes back goes to the next small party, passing the
    // big one over, as often as the rule allows (3 times).
    for (i, holder) in holders.iter().take(3).enumerate() {
        app.cancel(&holder.id, pb::CancelReason::User).await.unwrap();
        assert_eq!(entry(&app, &small[i].id).await.state(), pb::WaitlistState::Offered, "seat {i}");
    }
    assert_eq!(entry(&app, &big.id).await.state(), pb::WaitlistState::Waiting);
    // From now on the seats are set aside for it: not offered to the small
    // parties behind it, not public.
    for holder in &holders[3..5] {
        app.cancel(&holder.id, pb::CancelReason::User).await.unwrap();
    }
    assert_eq!(entry(&app, &small[3].id).await.state(), pb::WaitlistState::Waiting);
    assert_eq!(app.remaining(&slot).await.remaining, 0);
    assert_eq!(db_waitlist_seats(&app, &slot).await, (4, 2));
    // Three of the offers lapse or are given up: with the two set aside,
    // five seats: the big party's.
    for s in &small[..3] {
        leave(&app, &s.id).await.unwrap();
    }
    let big = entry(&app, &big.id).await;
    assert_eq!(big.state(), pb::WaitlistState::Offered);
    assert_eq!(reservation(&app, &big.offer_reservation_id).await.party_size, 5);
    assert_eq!(db_waitlist_seats(&app, &slot).await, (6, 0));
    assert_eq!(app.remaining(&slot).await.remaining, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn seats_that_go_public_past_a_party_count_as_passes_and_then_add_up_for_it() {
    let app = spawn().await;
    let slot = slot_at("21:30");
    open_with(&app, &slot, 4, None).await;
    let mut holders = Vec::new();
    for i in 0..4 {
        holders.push(app.create(reserve(&format!("r-{i}"), &format!("h-{i}"), &slot, 1)).await.unwrap());
    }
    let four = join(&app, "j-four", "four", &slot, 4).await.unwrap();

    // One seat back at a time: too few for the party of four, so each goes
    // public past it, and it counts the pass.
    for h in &holders[..3] {
        app.cancel(&h.id, pb::CancelReason::User).await.unwrap();
        assert_eq!(entry(&app, &four.id).await.state(), pb::WaitlistState::Waiting);
    }
    assert_eq!(app.remaining(&slot).await.remaining, 3);
    // Passed over three times: the next seat is set aside for it.
    app.cancel(&holders[3].id, pb::CancelReason::User).await.unwrap();
    assert_eq!(db_waitlist_seats(&app, &slot).await, (0, 1));
    assert_eq!(app.remaining(&slot).await.remaining, 3);
    // Others book the public seats; as they come back, they add up for it.
    let mut others = Vec::new();
    for i in 0..3 {
        others.push(app.create(reserve(&format!("o-{i}"), &format!("o-{i}"), &slot, 1)).await.unwrap());
    }
    for o in &others {
        app.cancel(&o.id, pb::CancelReason::User).await.unwrap();
    }
    let four = entry(&app, &four.id).await;
    assert_eq!(four.state(), pb::WaitlistState::Offered);
    assert_eq!(reservation(&app, &four.offer_reservation_id).await.party_size, 4);
    assert_eq!(db_waitlist_seats(&app, &slot).await, (4, 0));
    assert_eq!(app.remaining(&slot).await.remaining, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn seats_the_reaper_takes_back_from_a_dead_hold_go_to_the_line_first() {
    let app = spawn().await;
    let slot = slot_at("17:00");
    open_with(&app, &slot, 4, None).await;
    app.create(reserve("r-a", "a", &slot, 2)).await.unwrap();
    // A dead process's admitted request holds the other two seats.
    crate::reaper::orphan_hold(&app, &slot, "9b2e6a4c-0d1f-4a8e-9c3b-6f5d4e3c2b1b", "ghost", 2, 1).await;
    let two = join(&app, "j-two", "two", &slot, 2).await.unwrap();
    assert_eq!(app.booking.reap().await.unwrap().released, 1);
    assert_eq!(entry(&app, &two.id).await.state(), pb::WaitlistState::Offered);
    assert_eq!(app.remaining(&slot).await.remaining, 0, "the released seats went to the line, not to the public");
    assert_eq!(app.holds(&slot).await, 0);
}
