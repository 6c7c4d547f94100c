//! The waitlist under load: a burst whose refused callers all join, and a
//! cancel in the middle of a burst of new callers.

use std::{
    collections::BTreeSet,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI32, Ordering},
    },
    time::Duration,
};

use slotgate::{metrics::Metrics, pb};
use tonic::{Code, Status};

use crate::{
    bursts::{Scenario, clicks, scenario},
    helpers::{by_hand, connect, generous_timeouts, reason_of, release_together, reserve, slot_at, spawn_app_with},
    waitlist::{entry, join, join_request, open_with},
};

type Joined = Option<Result<pb::WaitlistEntry, Status>>;

#[tokio::test(flavor = "multi_thread")]
async fn duplicate_2000_with_every_refused_caller_joining_books_ten_and_queues_exactly_twenty() {
    let app = spawn_app_with(|c| {
        generous_timeouts(c);
        by_hand(c);
        // Each user clicks three times and joins after each refusal.
        c.user_burst = 10;
    })
    .await;
    let slot = slot_at("11:00");
    open_with(&app, &slot, 40, Some(20)).await;
    let Scenario { users, clicks: per_user } = scenario("duplicate-2000");
    let requests = clicks(std::slice::from_ref(&slot), users, per_user);
    let transactions_before = Metrics::read(&app.metrics.store_transactions);
    let calls = release_together(app.addr, 8, requests, |mut client, request| async move {
        let booked = client.create_reservation(request.clone()).await.map(tonic::Response::into_inner);
        let joined: Joined = match &booked {
            Err(s) if reason_of(s).1 == "SOLD_OUT" => {
                let slot = request.slot.clone().unwrap();
                let join = join_request(&format!("j-{}", request.request_id), &request.user_id, &slot, 4);
                Some(client.join_waitlist(join).await.map(tonic::Response::into_inner))
            }
            _ => None,
        };
        (booked, joined)
    });
    let results = calls.await.results().await;
    assert_eq!(results.len(), users * per_user);

    let winners: BTreeSet<String> =
        results.iter().filter_map(|(b, _)| b.as_ref().ok()).map(|r| r.user_id.clone()).collect();
    assert_eq!(winners.len(), 10);
    let mut queued = Vec::new();
    for (booked, joined) in &results {
        if let Err(s) = booked {
            let reason = reason_of(s);
            assert!(
                reason == (Code::FailedPrecondition, "SOLD_OUT".into())
                    || reason == (Code::AlreadyExists, "DUPLICATE".into()),
                "booking refused with {reason:?}"
            );
        }
        match joined {
            Some(Ok(e)) => queued.push(e.clone()),
            Some(Err(s)) => {
                let reason = reason_of(s);
                assert!(
                    reason == (Code::FailedPrecondition, "WAITLIST_FULL".into())
                        || reason == (Code::AlreadyExists, "DUPLICATE".into()),
                    "join refused with {reason:?}"
                );
            }
            None => {}
        }
    }
    // Twenty distinct users, none of them a winner, at positions 1..20.
    let queued_users: BTreeSet<&str> = queued.iter().map(|e| e.user_id.as_str()).collect();
    assert_eq!((queued.len(), queued_users.len()), (20, 20));
    assert!(queued_users.iter().all(|u| !winners.contains(*u)));
    let positions: BTreeSet<i32> = queued.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=20).collect());

    // Database writes, counted: ten winners, twenty joins, nothing else.
    let transactions = Metrics::read(&app.metrics.store_transactions) - transactions_before;
    assert_eq!(transactions, 30, "winner and join transactions");
    assert_eq!(app.db_slot(&slot).await, (40, 40, 40));
    assert_eq!(app.remaining(&slot).await.remaining, 0);
    let in_line: usize =
        redis::cmd("HLEN").arg(app.key(&slot, "waiters")).query_async(&mut app.redis().await).await.unwrap();
    assert_eq!(in_line, 21, "twenty entries and the sentinel");

    // The list pages through them in line order.
    let mut listed = Vec::new();
    let mut token = String::new();
    loop {
        let page = app
            .admin
            .clone()
            .list_waitlist(pb::ListWaitlistRequest { slot: Some(slot.clone()), page_size: 8, page_token: token })
            .await
            .unwrap()
            .into_inner();
        listed.extend(page.entries.iter().map(|e| (e.position, e.parties_ahead)));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(listed, (1..=20).map(|p| (p, p - 1)).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_in_a_burst_goes_to_the_first_entry_that_fits_and_never_to_the_burst() {
    let app = spawn_app_with(|c| {
        generous_timeouts(c);
        by_hand(c);
    })
    .await;
    let slot = slot_at("12:00");
    open_with(&app, &slot, 40, None).await;
    let mut booked = Vec::new();
    for i in 0..10 {
        booked.push(app.create(reserve(&format!("r-{i}"), &format!("holder-{i}"), &slot, 4)).await.unwrap());
    }
    let six = join(&app, "j-six", "six", &slot, 6).await.unwrap();
    let four = join(&app, "j-four", "four", &slot, 4).await.unwrap();
    let two = join(&app, "j-two", "two", &slot, 2).await.unwrap();
    let last = join(&app, "j-last", "last", &slot, 4).await.unwrap();
    assert_eq!((two.parties_ahead, last.parties_ahead), (2, 3));

    // New callers wanting one seat each, without pause, and a reader of
    // the counter, while a party of four cancels.
    let stop = Arc::new(AtomicBool::new(false));
    let highest = Arc::new(AtomicI32::new(i32::MIN));
    let mut callers = Vec::new();
    for c in 0..8 {
        let (stop, mut client) =
            (Arc::clone(&stop), pb::reservations_client::ReservationsClient::new(connect(app.addr).await));
        let slot = slot.clone();
        callers.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let request = reserve(&format!("b-{c}-{n}"), &format!("burst-{c}-{n}"), &slot, 1);
                outcomes.push(reason_of(&client.create_reservation(request).await.unwrap_err()));
            }
            outcomes
        }));
    }
    let reader = {
        let (stop, highest) = (Arc::clone(&stop), Arc::clone(&highest));
        let mut client = pb::reservations_client::ReservationsClient::new(connect(app.addr).await);
        let slot = slot.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = client.get_remaining(pb::GetRemainingRequest { slot: Some(slot.clone()) }).await.unwrap();
                highest.fetch_max(r.into_inner().remaining, Ordering::Relaxed);
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.cancel(&booked[3].id, pb::CancelReason::User).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut calls = 0;
    for caller in callers {
        for outcome in caller.await.unwrap() {
            assert_eq!(outcome, (Code::FailedPrecondition, "SOLD_OUT".into()));
            calls += 1;
        }
    }
    reader.await.unwrap();
    assert!(calls > 0);
    assert_eq!(highest.load(Ordering::Relaxed), 0, "the counter never showed a seat");

    // The party of six does not fit the four seats and keeps its place;
    // the four does.
    let (six, four, two, last) = (
        entry(&app, &six.id).await,
        entry(&app, &four.id).await,
        entry(&app, &two.id).await,
        entry(&app, &last.id).await,
    );
    assert_eq!(six.state(), pb::WaitlistState::Waiting);
    assert_eq!(four.state(), pb::WaitlistState::Offered);
    assert_eq!((two.parties_ahead, last.parties_ahead), (1, 2), "the others moved up");
    assert_eq!(app.db_slot(&slot).await, (40, 40, 40));
}
