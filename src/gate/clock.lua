-- clock: Redis's clock on the node that holds the slot, the one acquire.lua
-- decides the slot's sale window by.
--
-- KEYS[1] seats (as acquire; only to route the call to the slot's node)
-- Returns TIME: {seconds, microseconds}.
return redis.call('TIME')
