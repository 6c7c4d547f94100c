//! `slotgate.v1.SlotAdmin`.

use std::sync::Arc;

use chrono::NaiveDate;
use tonic::{Request, Response, Status};

use super::convert;
use crate::{
    booking::{Booking, BookingError},
    domain::{
        FieldError, parse_close_slots, parse_date, parse_list_waitlist, parse_open_slots, parse_put_menu,
        parse_put_restaurant,
    },
    pb::{self, slot_admin_server::SlotAdmin},
};

/// `from_date` of WarmSlots and ReconcileSlots: empty means the default.
fn optional_date(value: &str) -> Result<Option<NaiveDate>, BookingError> {
    match value {
        "" => Ok(None),
        date => parse_date(date).map(Some).map_err(|d| FieldError::new("from_date", d).into()),
    }
}

pub struct AdminService {
    booking: Arc<Booking>,
}

impl AdminService {
    pub fn new(booking: Arc<Booking>) -> Self {
        Self { booking }
    }
}

#[tonic::async_trait]
impl SlotAdmin for AdminService {
    async fn list_waitlist(
        &self,
        request: Request<pb::ListWaitlistRequest>,
    ) -> Result<Response<pb::ListWaitlistResponse>, Status> {
        let query = parse_list_waitlist(request.get_ref()).map_err(BookingError::from)?;
        let page = self.booking.list_waitlist(&query).await?;
        Ok(Response::new(pb::ListWaitlistResponse {
            entries: page.entries.into_iter().map(convert::entry).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn open_slots(
        &self,
        request: Request<pb::OpenSlotsRequest>,
    ) -> Result<Response<pb::OpenSlotsResponse>, Status> {
        let slots = parse_open_slots(request.get_ref()).map_err(BookingError::from)?;
        let opened = self.booking.open_slots(slots).await?;
        Ok(Response::new(pb::OpenSlotsResponse {
            slots: opened
                .into_iter()
                .map(|o| pb::OpenedSlot {
                    slot: Some(o.slot.to_proto()),
                    capacity: o.capacity,
                    reserved: o.reserved,
                    remaining: o.capacity - o.reserved,
                    created: o.previous_capacity.is_none(),
                })
                .collect(),
        }))
    }

    async fn warm_slots(
        &self,
        request: Request<pb::WarmSlotsRequest>,
    ) -> Result<Response<pb::WarmSlotsResponse>, Status> {
        let from = optional_date(&request.get_ref().from_date)?;
        let warmed = self.booking.warm_slots(from).await?;
        Ok(Response::new(pb::WarmSlotsResponse {
            warmed: warmed.warmed as i32,
            already_warm: warmed.already_warm as i32,
            took_ms: warmed.took.as_millis() as i64,
        }))
    }

    async fn reconcile_slots(
        &self,
        request: Request<pb::ReconcileSlotsRequest>,
    ) -> Result<Response<pb::ReconcileSlotsResponse>, Status> {
        let from = optional_date(&request.get_ref().from_date)?;
        let report = self.booking.reconcile(from).await?;
        Ok(Response::new(pb::ReconcileSlotsResponse {
            checked: report.checked as i32,
            corrected: report.corrections.len() as i32,
            busy: report.busy as i32,
            corrections: report
                .corrections
                .iter()
                .map(|c| pb::SlotCorrection {
                    slot: Some(c.slot.to_proto()),
                    remaining_before: c.left_before.clamp(0, i64::from(i32::MAX)) as i32,
                    remaining_after: c.left_after as i32,
                    capacity: c.capacity,
                })
                .collect(),
            took_ms: report.took.as_millis() as i64,
        }))
    }

    async fn put_restaurant(
        &self,
        request: Request<pb::PutRestaurantRequest>,
    ) -> Result<Response<pb::PutRestaurantResponse>, Status> {
        let change = parse_put_restaurant(request.get_ref()).map_err(BookingError::from)?;
        let restaurant_id = change.restaurant_id;
        let set = self.booking.put_restaurant(change).await?;
        Ok(Response::new(pb::PutRestaurantResponse {
            restaurant_id,
            time_zone: set.time_zone,
            slots_moved: set.slots_moved as i32,
        }))
    }

    async fn close_slots(
        &self,
        request: Request<pb::CloseSlotsRequest>,
    ) -> Result<Response<pb::CloseSlotsResponse>, Status> {
        let slots = parse_close_slots(request.get_ref()).map_err(BookingError::from)?;
        let closed = self.booking.close_slots(slots).await?;
        Ok(Response::new(pb::CloseSlotsResponse {
            slots: closed
                .into_iter()
                .map(|c| pb::ClosedSlot {
                    slot: Some(c.slot.to_proto()),
                    closes_at: Some(convert::timestamp(c.closes_at)),
                })
                .collect(),
        }))
    }

    async fn put_menu(&self, request: Request<pb::PutMenuRequest>) -> Result<Response<pb::PutMenuResponse>, Status> {
        let menu = parse_put_menu(request.get_ref()).map_err(BookingError::from)?;
        let upserted = self.booking.put_menu(menu).await?;
        Ok(Response::new(pb::PutMenuResponse { upserted: upserted as i32 }))
    }
}
