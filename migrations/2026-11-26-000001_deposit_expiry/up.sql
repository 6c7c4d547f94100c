-- The expiry sweeper's scan: unpaid reservations by deadline.
CREATE INDEX reservations_pending_by_deadline
    ON reservations (deposit_deadline)
    WHERE status = 'PENDING_DEPOSIT';
