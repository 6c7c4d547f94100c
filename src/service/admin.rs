//! `slotgate.v1.SlotAdmin`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::{
    booking::{Booking, BookingError},
    domain::{FieldError, parse_date, parse_open_slots, parse_put_menu},
    pb::{self, slot_admin_server::SlotAdmin},
};

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
        let from = match request.get_ref().from_date.as_str() {
            "" => None,
            date => Some(parse_date(date).map_err(|d| BookingError::from(FieldError::new("from_date", d)))?),
        };
        let warmed = self.booking.warm_slots(from).await?;
        Ok(Response::new(pb::WarmSlotsResponse {
            warmed: warmed.warmed as i32,
            already_warm: warmed.already_warm as i32,
            took_ms: warmed.took.as_millis() as i64,
        }))
    }

    async fn put_menu(&self, request: Request<pb::PutMenuRequest>) -> Result<Response<pb::PutMenuResponse>, Status> {
        let (restaurant_id, items) = parse_put_menu(request.get_ref()).map_err(BookingError::from)?;
        let upserted = self.booking.put_menu(restaurant_id, items).await?;
        Ok(Response::new(pb::PutMenuResponse { upserted: upserted as i32 }))
    }
}
