-- remaining: read a slot's counter, its window and Redis's clock at once, so
-- the state a caller is shown is the one the gate would decide on.
--
-- KEYS[1] seats (as acquire)
-- Returns {left, cap, opens, closes, starts, now}: `left` false when the
-- slot is cold; window bounds false when absent; now in Unix ms.
local f = redis.call('HMGET', KEYS[1], 'left', 'cap', 'opens', 'closes', 'starts')
local now = redis.call('TIME')
return {f[1], f[2], f[3], f[4], f[5], string.format('%d', tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000))}
