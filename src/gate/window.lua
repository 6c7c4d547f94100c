-- window: shared by acquire.lua and join.lua, which the gate loads with this
-- file in front of them; not a script of its own.
--
-- Decides a slot's sale window by Redis's clock, so every replica agrees on
-- the instant. Returns the refusal, or nil while the slot takes
-- reservations, and now in Unix milliseconds:
--   {9, starts}       STARTED: at or after the slot's start (Unix ms)
--   {8, closes}       CLOSED: at or after the window's end (Unix ms)
--   {7, 'opens now'}  NOT_OPEN: before the window's opening (Unix ms, as
--                     stored), `now` in Unix microseconds, so the wait is
--                     never overstated (the decisions compare whole
--                     milliseconds rounded down, so a window never opens
--                     early); no arithmetic on them here, where large
--                     numbers print in exponent form
local function window_refusal(seats)
  local now = redis.call('TIME')
  local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  local window = redis.call('HMGET', seats, 'opens', 'closes', 'starts')
  local opens, closes, starts = tonumber(window[1]), tonumber(window[2]), tonumber(window[3])
  if starts and now_ms >= starts then
    return {9, window[3]}, now_ms
  elseif closes and now_ms >= closes then
    return {8, window[2]}, now_ms
  elseif opens and now_ms < opens then
    return {7, window[1] .. ' ' .. string.format('%d', tonumber(now[1]) * 1000000 + tonumber(now[2]))}, now_ms
  end
  return nil, now_ms
end

