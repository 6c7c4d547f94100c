DROP TABLE event_log;
DROP TABLE reservation_events;
DROP TABLE event_inbox;
