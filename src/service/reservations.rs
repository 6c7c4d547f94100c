//! `slotgate.v1.Reservations`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert;
use crate::{
    auth::Caller,
    booking::{Booking, BookingError, Watched},
    domain::{
        FieldError, Join, Limits, NewReservation, ReservationId, SlotKey, parse_cancel, parse_code, parse_entry_id,
        parse_list_availability, parse_list_reservations, parse_watch,
    },
    overload::{Deadline, UserGuard},
    pb::{self, reservations_server::Reservations},
};

pub struct ReservationsService {
    booking: Arc<Booking>,
    limits: Limits,
    guard: UserGuard,
}

impl ReservationsService {
    pub fn new(booking: Arc<Booking>, limits: Limits, guard: UserGuard) -> Self {
        Self { booking, limits, guard }
    }
}

/// Work is not started for a call whose deadline has already passed (it
/// waited somewhere on the way): nobody is listening for its answer.
fn still_wanted<T>(request: &Request<T>) -> Result<(), BookingError> {
    match request.extensions().get::<Deadline>() {
        Some(deadline) if deadline.passed() => Err(BookingError::DeadlineExceeded),
        _ => Ok(()),
    }
}

/// The calling service's name, as authentication found it (empty when it
/// is off).
fn caller_of<T>(request: &Request<T>) -> String {
    request.extensions().get::<Caller>().map(|c| c.name.clone()).unwrap_or_default()
}

fn parse_id(id: &str) -> Result<ReservationId, BookingError> {
    id.parse().map_err(|_| FieldError::new("id", "must be a reservation id (a UUID)").into())
}

/// A watcher's events as the stream sends them.
type EventStream =
    std::pin::Pin<Box<dyn tonic::codegen::tokio_stream::Stream<Item = Result<pb::ReservationEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Reservations for ReservationsService {
    type WatchReservationEventsStream = EventStream;

    async fn watch_reservation_events(
        &self,
        request: Request<pb::WatchReservationEventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let (after, filter) = parse_watch(request.get_ref()).map_err(BookingError::from)?;
        let watched = self.booking.watch(after, filter).await?;
        // Ends after the first error (too slow, shutting down), which is
        // the stream's status.
        let stream = futures_util::stream::unfold((watched, false), |(mut watched, ended)| async move {
            if ended {
                return None;
            }
            let message = match watched.recv().await? {
                Ok(Watched::Event(event)) => Ok(convert::event(&event)),
                Ok(Watched::Heartbeat(sequence)) => Ok(pb::ReservationEvent {
                    sequence,
                    r#type: pb::ReservationEventType::Heartbeat as i32,
                    ..Default::default()
                }),
                Err(e) => Err(Status::from(e)),
            };
            let end = message.is_err();
            Some((message, (watched, end)))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn create_reservation(
        &self,
        request: Request<pb::CreateReservationRequest>,
    ) -> Result<Response<pb::Reservation>, Status> {
        let mut new = NewReservation::parse(request.get_ref(), self.limits).map_err(BookingError::from)?;
        if let Some(caller) = request.extensions().get::<Caller>() {
            new.caller = caller.name.clone();
        }
        self.guard.check(&new.user_id).map_err(|retry_after| BookingError::UserThrottled { retry_after })?;
        still_wanted(&request)?;
        let reservation = self.booking.create(new).await?;
        Ok(Response::new(convert::reservation(reservation)))
    }

    async fn get_reservation(
        &self,
        request: Request<pb::GetReservationRequest>,
    ) -> Result<Response<pb::Reservation>, Status> {
        use pb::get_reservation_request::Key;
        let reservation = match &request.get_ref().key {
            Some(Key::Id(id)) => self.booking.get(parse_id(id)?).await?,
            Some(Key::Code(code)) => {
                let code = parse_code(code).ok_or_else(|| {
                    BookingError::from(FieldError::new("code", "must be a code like SG-7K2M-9QXD-4B1T"))
                })?;
                self.booking.get_by_code(&code).await?
            }
            None => return Err(BookingError::from(FieldError::new("id", "id or code is required")).into()),
        };
        Ok(Response::new(convert::reservation(reservation)))
    }

    async fn confirm_reservation(
        &self,
        request: Request<pb::ConfirmReservationRequest>,
    ) -> Result<Response<pb::Reservation>, Status> {
        let id = parse_id(&request.get_ref().id)?;
        still_wanted(&request)?;
        Ok(Response::new(convert::reservation(self.booking.confirm(id, caller_of(&request)).await?)))
    }

    async fn cancel_reservation(
        &self,
        request: Request<pb::CancelReservationRequest>,
    ) -> Result<Response<pb::CancelReservationResponse>, Status> {
        let cancel = parse_cancel(request.get_ref()).map_err(BookingError::from)?;
        still_wanted(&request)?;
        let done = self.booking.cancel(cancel.id, cancel.reason, caller_of(&request)).await?;
        Ok(Response::new(pb::CancelReservationResponse {
            reservation: Some(convert::reservation(done.reservation)),
            already_cancelled: done.already_cancelled,
        }))
    }

    async fn get_remaining(
        &self,
        request: Request<pb::GetRemainingRequest>,
    ) -> Result<Response<pb::GetRemainingResponse>, Status> {
        let slot = SlotKey::parse(request.get_ref().slot.as_ref(), "slot").map_err(BookingError::from)?;
        let r = self.booking.remaining(slot).await?;
        Ok(Response::new(pb::GetRemainingResponse {
            remaining: r.left,
            capacity: r.capacity,
            opens_at: r.window.opens_at.map(convert::timestamp),
            closes_at: r.window.closes_at.map(convert::timestamp),
            state: r.state.to_proto() as i32,
            starts_at: r.window.starts_at.map(convert::timestamp),
        }))
    }

    async fn list_reservations(
        &self,
        request: Request<pb::ListReservationsRequest>,
    ) -> Result<Response<pb::ListReservationsResponse>, Status> {
        let query = parse_list_reservations(request.get_ref()).map_err(BookingError::from)?;
        let page = self.booking.list(&query).await?;
        Ok(Response::new(pb::ListReservationsResponse {
            reservations: page.reservations.into_iter().map(convert::reservation).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn list_availability(
        &self,
        request: Request<pb::ListAvailabilityRequest>,
    ) -> Result<Response<pb::ListAvailabilityResponse>, Status> {
        let day = parse_list_availability(request.get_ref(), self.limits.max_party_size).map_err(BookingError::from)?;
        let slots = self.booking.availability(day).await?;
        Ok(Response::new(pb::ListAvailabilityResponse {
            slots: slots
                .into_iter()
                .map(|a| pb::SlotAvailability {
                    slot: Some(a.slot.to_proto()),
                    capacity: a.remaining.capacity,
                    remaining: a.remaining.left,
                    state: a.remaining.state.to_proto() as i32,
                    opens_at: a.remaining.window.opens_at.map(convert::timestamp),
                    closes_at: a.remaining.window.closes_at.map(convert::timestamp),
                    starts_at: a.remaining.window.starts_at.map(convert::timestamp),
                    fits: a.fits,
                })
                .collect(),
        }))
    }

    async fn join_waitlist(
        &self,
        request: Request<pb::JoinWaitlistRequest>,
    ) -> Result<Response<pb::WaitlistEntry>, Status> {
        let mut join = Join::parse(request.get_ref(), self.limits).map_err(BookingError::from)?;
        join.caller = caller_of(&request);
        self.guard.check(&join.user_id).map_err(|retry_after| BookingError::UserThrottled { retry_after })?;
        still_wanted(&request)?;
        Ok(Response::new(convert::entry(self.booking.join_waitlist(join).await?)))
    }

    async fn get_waitlist_entry(
        &self,
        request: Request<pb::GetWaitlistEntryRequest>,
    ) -> Result<Response<pb::WaitlistEntry>, Status> {
        let id = parse_entry_id(&request.get_ref().id).map_err(BookingError::from)?;
        Ok(Response::new(convert::entry(self.booking.get_entry(id).await?)))
    }

    async fn leave_waitlist(
        &self,
        request: Request<pb::LeaveWaitlistRequest>,
    ) -> Result<Response<pb::WaitlistEntry>, Status> {
        let id = parse_entry_id(&request.get_ref().id).map_err(BookingError::from)?;
        still_wanted(&request)?;
        Ok(Response::new(convert::entry(self.booking.leave_waitlist(id, caller_of(&request)).await?)))
    }
}
