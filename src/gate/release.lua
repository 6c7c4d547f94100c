-- release: end a hold whose reservation was not committed, returning its
-- seats to the counter. Acts only on a hold made by the attempt named by
-- the nonce, so a repeated or racing release returns seats at most once,
-- and an attempt that is unsure whether its acquire ran (a lost reply) can
-- undo it without touching another attempt's hold.
--
-- KEYS[1] seats   KEYS[2] users   KEYS[3] ids   KEYS[4] holds
-- KEYS[5] void marker of the attempt   KEYS[6] (optional) the request's
-- record   (as acquire's 1 to 5 and 7)
-- ARGV[1] reservation id   ARGV[2] user id   ARGV[3] nonce of the attempt
-- ARGV[4] what goes with the hold:
--         0 nothing: the id names an active reservation, its entries are true
--         1 the user's and the id's entries: nothing was booked
--         2 the user's entry only: the id names a reservation that ended
--           (cancelled, expired), so its fingerprint entry is still true
-- ARGV[5] void for this many milliseconds (0: not): the attempt's reply was
--         lost, so its acquire may still be on its way (queued behind a
--         stall, or on a connection Redis has not read yet). The marker
--         makes that acquire take nothing whenever it runs, so the undo
--         holds in either order.
-- ARGV[6] this slot's name (with KEYS[6]: the record goes with the id's
--         entries when nothing was booked)
-- ARGV[7] '1': keep the seats out of the counter (the slot's waitlist gets
--         them first: the caller offers them in the database and then has
--         the counter loaded afresh); otherwise they go back to it
-- Returns the seats released (0 when this attempt held none).
local id, user, forget = ARGV[1], ARGV[2], ARGV[4]

if tonumber(ARGV[5]) > 0 then
  redis.call('SET', KEYS[5], '1', 'PX', ARGV[5])
end

local hold = redis.call('HGET', KEYS[4], id)
if not hold then
  -- No attempt holds this id. Entries of it that should go but are still
  -- here were made by a hold that was lost (a flush, an eviction): the
  -- counter may still count its seats. Make the slot cold, so the next
  -- request loads it again from the database. (Not for an attempt whose
  -- reply was lost: it may never have run, and the entries may be another
  -- attempt's, committed.)
  if forget ~= '0' and tonumber(ARGV[5]) == 0 and (redis.call('HGET', KEYS[2], user) == id
      or (forget == '1' and redis.call('HEXISTS', KEYS[3], id) == 1)) then
    redis.call('HDEL', KEYS[1], 'left')
  end
  return 0
end
local party, nonce = string.match(hold, '^(%d+)|.*|(%d+)$')
if nonce ~= ARGV[3] then
  return 0
end

redis.call('HDEL', KEYS[4], id)
-- A missing counter means the slot went cold (flush, restart, eviction):
-- the next load recomputes it from the database, so adding to it here would
-- invent a counter holding only this hold's seats.
if redis.call('HEXISTS', KEYS[1], 'left') == 1 then
  if ARGV[7] ~= '1' then
    redis.call('HINCRBY', KEYS[1], 'left', tonumber(party))
  end
  redis.call('HINCRBY', KEYS[1], 'epoch', 1)
end
if forget ~= '0' and redis.call('HGET', KEYS[2], user) == id then
  redis.call('HDEL', KEYS[2], user)
end
if forget == '1' then
  redis.call('HDEL', KEYS[3], id)
  if KEYS[6] and redis.call('GET', KEYS[6]) == ARGV[6] then
    redis.call('DEL', KEYS[6])
  end
end
return tonumber(party)
