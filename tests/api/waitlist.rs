//! The waitlist: refused parties queue in order, and seats that come back
//! are offered to them before anyone else sees them.

use std::time::Duration;

use diesel::{QueryableByName, sql_query, sql_types::BigInt};
use diesel_async::RunQueryDsl;
use slotgate::pb;
use tonic::{Code, Status};

use slotgate::{
    domain::{Join, Limits},
    gate::{JoinDecision, attempt_nonce},
};

use crate::helpers::{TestApp, by_hand, reason_of, reserve, slot_at, spawn_app_with};

pub const OFFER_WINDOW: Duration = Duration::from_secs(600);

/// An app with its background passes off, and a per-user guard loose
/// enough for a user's several calls in a row.
pub async fn spawn() -> TestApp {
    spawn_app_with(|c| {
        by_hand(c);
        c.user_burst = 1_000;
    })
    .await
}

pub async fn open_with(app: &TestApp, slot: &pb::SlotRef, capacity: i32, waitlist_limit: Option<i32>) {
    let request = pb::OpenSlotsRequest {
        slots: vec![pb::SlotCapacity { slot: Some(slot.clone()), capacity, waitlist_limit, ..Default::default() }],
    };
    app.admin.clone().open_slots(request).await.expect("open slots");
}

pub fn join_request(request_id: &str, user: &str, slot: &pb::SlotRef, party_size: i32) -> pb::JoinWaitlistRequest {
    pb::JoinWaitlistRequest {
        request_id: request_id.into(),
        user_id: user.into(),
        slot: Some(slot.clone()),
        party_size,
    }
}

pub async fn join(
    app: &TestApp,
    request_id: &str,
    user: &str,
    slot: &pb::SlotRef,
    party_size: i32,
) -> Result<pb::WaitlistEntry, Status> {
    app.reservations
        .clone()
        .join_waitlist(join_request(request_id, user, slot, party_size))
        .await
        .map(tonic::Response::into_inner)
}

pub async fn entry(app: &TestApp, id: &str) -> pb::WaitlistEntry {
    app.reservations
        .clone()
        .get_waitlist_entry(pb::GetWaitlistEntryRequest { id: id.into() })
        .await
        .expect("get entry")
        .into_inner()
}

pub async fn leave(app: &TestApp, id: &str) -> Result<pb::WaitlistEntry, Status> {
    app.reservations
        .clone()
        .leave_waitlist(pb::LeaveWaitlistRequest { id: id.into() })
        .await
        .map(tonic::Response::into_inner)
}

pub async fn confirm(app: &TestApp, id: &str) -> Result<pb::Reservation, Status> {
    app.reservations
        .clone()
        .confirm_reservation(pb::ConfirmReservationRequest { id: id.into() })
        .await
        .map(tonic::Response::into_inner)
}

pub async fn reservation(app: &TestApp, id: &str) -> pb::Reservation {
    app.reservations
        .clone()
        .get_reservation(pb::GetReservationRequest { key: Some(pb::get_reservation_request::Key::Id(id.into())) })
        .await
        .expect("get reservation")
        .into_inner()
}

/// The events written so far (numbered or not), oldest first, as
/// "TYPE user".
pub async fn events_written(app: &TestApp) -> Vec<String> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        line: String,
    }
    let rows: Vec<Row> = sql_query(
        "SELECT line FROM (
             SELECT sequence AS n, type || ' ' || user_id AS line FROM reservation_events
             UNION ALL
             SELECT (SELECT last_sequence FROM event_log) + id, type || ' ' || user_id FROM event_inbox
         ) e ORDER BY n",
    )
    .load(&mut app.database().await)
    .await
    .unwrap();
    rows.into_iter().map(|r| r.line).collect()
}

/// Seats not public in the database: (reserved, set aside); the first
/// includes the offers' reservations.
pub async fn db_waitlist_seats(app: &TestApp, slot: &pb::SlotRef) -> (i64, i64) {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        reserved: i64,
        #[diesel(sql_type = BigInt)]
        set_aside: i64,
    }
    let row: Row = sql_query(
        "SELECT reserved::bigint AS reserved, set_aside::bigint AS set_aside FROM slots
         WHERE restaurant_id = $1 AND slot_date = $2::date AND slot_time = $3::time",
    )
    .bind::<BigInt, _>(slot.restaurant_id)
    .bind::<diesel::sql_types::Text, _>(&slot.date)
    .bind::<diesel::sql_types::Text, _>(&slot.time)
    .get_result(&mut app.database().await)
    .await
    .unwrap();
    (row.reserved, row.set_aside)
}

/// A slot of two seats: alice books both, bob and carol (parties of two)
/// join, alice cancels. Returns bob's entry as he joined and as offered,
/// and carol's.
async fn bob_offered_carol_waiting(
    app: &TestApp,
    slot: &pb::SlotRef,
) -> (pb::WaitlistEntry, pb::WaitlistEntry, pb::WaitlistEntry) {
    open_with(app, slot, 2, None).await;
    let alice = app.create(reserve("r-alice", "alice", slot, 2)).await.unwrap();
    let bob = join(app, "j-bob", "bob", slot, 2).await.unwrap();
    let carol = join(app, "j-carol", "carol", slot, 2).await.unwrap();
    app.cancel(&alice.id, pb::CancelReason::User).await.unwrap();
    let offered = entry(app, &bob.id).await;
    assert_eq!(offered.state(), pb::WaitlistState::Offered);
    (bob, offered, carol)
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_parties_queue_in_order_and_freed_seats_are_offered_before_they_go_public() {
    let app = spawn().await;
    let slot = slot_at("19:00");
    open_with(&app, &slot, 4, None).await;
    let alice = app.create(reserve("r-alice", "alice", &slot, 4)).await.unwrap();

    // Nobody queues for seats that are free.
    let other = slot_at("19:30");
    open_with(&app, &other, 4, None).await;
    let refused = join(&app, "j-free", "bob", &other, 2).await.unwrap_err();
    assert_eq!(reason_of(&refused), (Code::FailedPrecondition, "SEATS_AVAILABLE".into()));

    let bob = join(&app, "j-bob", "bob", &slot, 2).await.unwrap();
    assert_eq!((bob.state(), bob.position, bob.parties_ahead), (pb::WaitlistState::Waiting, 1, 0));
    let carol = join(&app, "j-carol", "carol", &slot, 4).await.unwrap();
    assert_eq!((carol.position, carol.parties_ahead), (2, 1));
    let dave = join(&app, "j-dave", "dave", &slot, 1).await.unwrap();
    assert_eq!((dave.position, dave.parties_ahead), (3, 2));

    // A replay is the same entry; another join of the same user, or of a
    // user holding seats here, is a duplicate; the same request id with
    // another payload is refused.
    assert_eq!(join(&app, "j-bob", "bob", &slot, 2).await.unwrap(), bob);
    let again = join(&app, "j-bob-2", "bob", &slot, 2).await.unwrap_err();
    assert_eq!(reason_of(&again), (Code::AlreadyExists, "DUPLICATE".into()));
    let holding = join(&app, "j-alice", "alice", &slot, 2).await.unwrap_err();
    assert_eq!(reason_of(&holding), (Code::AlreadyExists, "DUPLICATE".into()));
    let reused = join(&app, "j-bob", "bob", &slot, 3).await.unwrap_err();
    assert_eq!(reason_of(&reused), (Code::InvalidArgument, "REQUEST_ID_REUSED".into()));

    // Alice's four seats come back: bob (2) fits, carol (4) does not and
    // keeps her place, dave (1) fits; one seat goes public.
    app.cancel(&alice.id, pb::CancelReason::User).await.unwrap();
    let bob = entry(&app, &bob.id).await;
    let carol = entry(&app, &carol.id).await;
    let dave = entry(&app, &dave.id).await;
    assert_eq!(bob.state(), pb::WaitlistState::Offered);
    assert_eq!(dave.state(), pb::WaitlistState::Offered);
    assert_eq!((carol.state(), carol.parties_ahead), (pb::WaitlistState::Waiting, 0));
    assert_eq!(app.remaining(&slot).await.remaining, 1);
    assert_eq!(db_waitlist_seats(&app, &slot).await, (3, 0));

    // The offer is a pending reservation for the entry's party, due at the
    // offer's deadline.
    let offer = reservation(&app, &bob.offer_reservation_id).await;
    assert_eq!((offer.user_id.as_str(), offer.party_size), ("bob", 2));
    assert_eq!(offer.status(), pb::ReservationStatus::PendingDeposit);
    assert_eq!(offer.deposit_deadline, bob.offer_deadline);
    let window = offer.deposit_deadline.unwrap().seconds - offer.created_at.unwrap().seconds;
    assert_eq!(window, OFFER_WINDOW.as_secs() as i64);
    // The offered user holds it: booking again is a duplicate.
    let dup = app.create(reserve("r-bob", "bob", &slot, 1)).await.unwrap_err();
    assert_eq!(reason_of(&dup), (Code::AlreadyExists, "DUPLICATE".into()));

    // Confirming accepts it; leaving while offered gives the seat on.
    confirm(&app, &offer.id).await.unwrap();
    assert_eq!(entry(&app, &bob.id).await.state(), pb::WaitlistState::Accepted);
    let left = leave(&app, &dave.id).await.unwrap();
    assert_eq!(left.state(), pb::WaitlistState::Left);
    assert_eq!(leave(&app, &dave.id).await.unwrap(), left, "leaving twice changes nothing");
    let ended = leave(&app, &bob.id).await.unwrap_err();
    assert_eq!(reason_of(&ended), (Code::FailedPrecondition, "WAITLIST_ENTRY_ENDED".into()));
    assert_eq!(reservation(&app, &dave.offer_reservation_id).await.status(), pb::ReservationStatus::Cancelled);
    // Carol's four still do not fit the two free seats: public.
    assert_eq!(app.remaining(&slot).await.remaining, 2);
    assert_eq!(entry(&app, &carol.id).await.state(), pb::WaitlistState::Waiting);

    let events = events_written(&app).await;
    let waitlist: Vec<&str> = events.iter().map(String::as_str).filter(|e| !e.starts_with("CONFIRMED")).collect();
    assert_eq!(
        waitlist,
        [
            "CREATED alice",
            "WAITLIST_JOINED bob",
            "WAITLIST_JOINED carol",
            "WAITLIST_JOINED dave",
            "CANCELLED alice",
            "CREATED bob",
            "WAITLIST_OFFERED bob",
            "CREATED dave",
            "WAITLIST_OFFERED dave",
            "CANCELLED dave",
            "WAITLIST_LEFT dave",
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_offer_lapses_at_its_deadline_and_the_seats_go_to_the_next_entry() {
    let app = spawn().await;
    let slot = slot_at("20:00");
    let (bob, offered, carol) = bob_offered_carol_waiting(&app, &slot).await;
    assert_eq!(entry(&app, &carol.id).await.parties_ahead, 0, "bob is no longer waiting ahead of her");

    // The deadline passes unconfirmed: bob's offer lapses, carol's comes.
    app.clock.advance(OFFER_WINDOW - Duration::from_secs(60));
    assert_eq!(app.booking.expire_due().await.unwrap(), 0, "not yet");
    app.clock.advance(Duration::from_secs(120));
    assert_eq!(app.booking.expire_due().await.unwrap(), 1);
    assert_eq!(entry(&app, &bob.id).await.state(), pb::WaitlistState::Lapsed);
    let carol = entry(&app, &carol.id).await;
    assert_eq!(carol.state(), pb::WaitlistState::Offered);
    assert_eq!(app.remaining(&slot).await.remaining, 0, "the seats never went public");
    // A late confirm of bob's offer is refused; carol's is taken.
    let late = confirm(&app, &offered.offer_reservation_id).await.unwrap_err();
    assert_eq!(reason_of(&late), (Code::FailedPrecondition, "DEPOSIT_EXPIRED".into()));
    confirm(&app, &carol.offer_reservation_id).await.unwrap();
    assert_eq!(entry(&app, &carol.id).await.state(), pb::WaitlistState::Accepted);
    assert_eq!(app.db_slot(&slot).await, (2, 2, 2));
    // A notification service watching bob's events learns of each step.
    let request = pb::WatchReservationEventsRequest { user_id: "bob".into(), ..Default::default() };
    let mut stream = app.reservations.clone().watch_reservation_events(request).await.unwrap().into_inner();
    let events = crate::events::next_events(&mut stream, 5, Duration::from_secs(10)).await;
    let seen: Vec<(pb::ReservationEventType, Option<pb::WaitlistState>, Option<pb::ReservationStatus>)> = events
        .iter()
        .map(|e| (e.r#type(), e.waitlist_entry.as_ref().map(|w| w.state()), e.reservation.as_ref().map(|r| r.status())))
        .collect();
    use pb::{ReservationEventType as T, ReservationStatus as R, WaitlistState as W};
    assert_eq!(
        seen,
        [
            (T::WaitlistJoined, Some(W::Waiting), None),
            (T::Created, None, Some(R::PendingDeposit)),
            (T::WaitlistOffered, Some(W::Offered), Some(R::PendingDeposit)),
            (T::Expired, None, Some(R::Expired)),
            (T::WaitlistLapsed, Some(W::Lapsed), Some(R::Expired)),
        ]
    );
    let offered = events[2].waitlist_entry.as_ref().unwrap();
    assert_eq!(
        (offered.offer_reservation_id.as_str(), offered.position),
        (events[1].reservation.as_ref().unwrap().id.as_str(), 1)
    );
    assert!(events[0].waitlist_entry.as_ref().unwrap().offer_reservation_id.is_empty(), "no offer yet when joining");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_waitlist_and_a_slot_without_one_refuse_with_their_reasons() {
    let app = spawn().await;
    let full = slot_at("18:00");
    open_with(&app, &full, 2, Some(1)).await;
    app.create(reserve("r-1", "alice", &full, 2)).await.unwrap();
    join(&app, "j-1", "bob", &full, 2).await.unwrap();
    let refused = join(&app, "j-2", "carol", &full, 2).await.unwrap_err();
    assert_eq!(reason_of(&refused), (Code::FailedPrecondition, "WAITLIST_FULL".into()));

    let off = slot_at("18:30");
    open_with(&app, &off, 2, Some(0)).await;
    app.create(reserve("r-2", "alice", &off, 2)).await.unwrap();
    let refused = join(&app, "j-3", "bob", &off, 2).await.unwrap_err();
    assert_eq!(reason_of(&refused), (Code::FailedPrecondition, "WAITLIST_OFF".into()));

    let missing = leave(&app, "6f1c2d3e-0000-4000-8000-000000000000").await.unwrap_err();
    assert_eq!(reason_of(&missing), (Code::NotFound, "WAITLIST_ENTRY_NOT_FOUND".into()));
    let bad = join(&app, "j-4", "bob", &off, 0).await.unwrap_err();
    assert_eq!(reason_of(&bad), (Code::InvalidArgument, "INVALID_FIELD".into()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_join_delivered_twice_is_answered_as_the_first_and_a_lost_one_is_undone_in_either_order() {
    let app = spawn().await;
    let slot = slot_at("22:00");
    open_with(&app, &slot, 2, None).await;
    app.create(reserve("r-alice", "alice", &slot, 2)).await.unwrap();
    // The gate the server runs, on the same namespace.
    let gate = crate::faults::the_apps_gate(&app).await;
    let limits = Limits { max_party_size: 20, max_menu_items: 50 };
    let bob = Join::parse(&join_request("j-1", "bob", &slot, 2), limits).unwrap();

    // A second delivery of the same attempt (a client library's retry) is
    // answered as the first; another attempt of the request is a replay.
    let nonce = attempt_nonce();
    let first = gate.join(&bob, nonce).await.unwrap();
    assert_eq!(first, JoinDecision::Joined { position: 1 });
    assert_eq!(gate.join(&bob, nonce).await.unwrap(), first);
    assert_eq!(gate.join(&bob, attempt_nonce()).await.unwrap(), JoinDecision::Replay);
    // Its reply lost, the attempt is undone, once.
    assert!(gate.unjoin(&bob, nonce).await.unwrap());
    assert!(!gate.unjoin(&bob, nonce).await.unwrap());
    let waiters = app.key(&slot, "waiters");
    let bob_waits: bool =
        redis::cmd("HEXISTS").arg(&waiters).arg("bob").query_async(&mut app.redis().await).await.unwrap();
    assert!(!bob_waits);

    // An undo that reaches Redis before its join: the join takes nothing.
    let carol = Join::parse(&join_request("j-2", "carol", &slot, 2), limits).unwrap();
    let nonce = attempt_nonce();
    assert!(!gate.unjoin(&carol, nonce).await.unwrap());
    assert!(gate.join(&carol, nonce).await.is_err(), "a voided attempt takes nothing");
    let carol_waits: bool =
        redis::cmd("HEXISTS").arg(&waiters).arg("carol").query_async(&mut app.redis().await).await.unwrap();
    assert!(!carol_waits);
    // A fresh attempt joins, at the next position (numbers of joins that
    // never landed are skipped).
    assert_eq!(gate.join(&carol, attempt_nonce()).await.unwrap(), JoinDecision::Joined { position: 2 });
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_in_line_books_through_it_and_a_closed_slot_makes_no_offers() {
    let app = spawn().await;
    let slot = slot_at("22:30");
    open_with(&app, &slot, 2, None).await;
    let alice = app.create(reserve("r-alice", "alice", &slot, 2)).await.unwrap();
    let bob = join(&app, "j-bob", "bob", &slot, 2).await.unwrap();
    // In line, bob does not book around it.
    let around = app.create(reserve("r-bob", "bob", &slot, 1)).await.unwrap_err();
    assert_eq!(reason_of(&around), (Code::AlreadyExists, "DUPLICATE".into()));

    // The slot closes: seats that come back are offered to nobody.
    app.admin.clone().close_slots(pb::CloseSlotsRequest { slots: vec![slot.clone()] }).await.unwrap();
    app.cancel(&alice.id, pb::CancelReason::Restaurant).await.unwrap();
    assert_eq!(entry(&app, &bob.id).await.state(), pb::WaitlistState::Waiting);
    assert_eq!(db_waitlist_seats(&app, &slot).await, (0, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn leaving_while_offered_passes_the_seats_to_the_next_in_line() {
    let app = spawn().await;
    let slot = slot_at("23:00");
    let (bob, offered, carol) = bob_offered_carol_waiting(&app, &slot).await;

    let left = leave(&app, &bob.id).await.unwrap();
    assert_eq!(left.state(), pb::WaitlistState::Left);
    assert_eq!(reservation(&app, &offered.offer_reservation_id).await.status(), pb::ReservationStatus::Cancelled);
    assert_eq!(entry(&app, &carol.id).await.state(), pb::WaitlistState::Offered);
    assert_eq!(app.remaining(&slot).await.remaining, 0);
    assert_eq!(app.db_slot(&slot).await, (2, 2, 2));
}
