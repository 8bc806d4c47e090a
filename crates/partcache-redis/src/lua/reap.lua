-- Reclaims up to ARGV[8] entries whose deadline passed, from the deadline records and,
-- on a max-idle cache, from the index (entries without records: lean, see store):
-- Redis already dropped their values; this drops their bookkeeping and announces each
-- that can be with an Expired event (gone).
-- Result: {how many were due in the larger of the two (the caller comes back when it
-- hit the limit), the earliest deadline left (ms), or -1 when none}.
local limit = tonumber(ARGV[FIRST])
local due = rcall('ZRANGEBYSCORE', DL, '-inf', int(NOW), 'LIMIT', 0, limit)
for _, text in ipairs(due) do
  local left = rcall('PTTL', ek(text))
  if left == -2 then
    gone(text)
  elseif left == -1 then
    -- The value lost its deadline (overwritten by put.lua, which leaves the records
    -- to this): the records are stale, the entry lives on.
    rcall('ZREM', DL, text)
    rcall('HDEL', FX, text)
  end
  -- A value with time left expires within this millisecond; the next pass takes it.
end
local busy = #due
local first = rcall('ZRANGE', DL, 0, 0, 'WITHSCORES')
local earliest = nil
if first[2] then earliest = tonumber(first[2]) end
if IDLE >= 0 then
  -- Last used (µs) strictly before now - max-idle: the idle deadline has passed.
  local stale = '(' .. int((NOW - IDLE) * 1000)
  local idle = rcall('ZRANGEBYSCORE', IX, '-inf', stale, 'LIMIT', 0, limit)
  for _, text in ipairs(idle) do
    local left = rcall('PTTL', ek(text))
    if left == -2 then
      gone(text)
    elseif left >= 0 then
      -- Alive, so its score is behind its deadline (an entry a policy keeps, or a
      -- write by another process' settings): score it by the deadline it has.
      rcall('ZADD', IX, 'XX', int((NOW + left - IDLE) * 1000), text)
    else
      -- No deadline at all (written under other settings): as if used now.
      rcall('ZADD', IX, 'XX', tick(), text)
    end
  end
  if #idle > busy then busy = #idle end
  local oldest = rcall('ZRANGE', IX, 0, 0, 'WITHSCORES')
  if oldest[2] then
    earliest = minv(earliest, floor(tonumber(oldest[2]) / 1000) + IDLE)
  end
end
local e = -1
if earliest then e = int(earliest) end
return reply({busy, e})
