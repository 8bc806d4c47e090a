-- Reclaims up to ARGV[8] entries whose deadline passed: Redis already dropped their
-- values; this drops their bookkeeping and announces each with an Expired event.
-- Result: {how many deadlines were due (the caller comes back when it hit the limit),
-- the earliest deadline left (ms), or -1 when none}.
local due = redis.call('ZRANGEBYSCORE', DL, '-inf', int(NOW), 'LIMIT', 0, tonumber(ARGV[FIRST]))
for _, text in ipairs(due) do
  local left = redis.call('PTTL', ek(text))
  if left == -2 then
    gone(text)
  elseif left == -1 then
    -- The value lost its deadline (overwritten by put.lua, which leaves the records
    -- to this): the records are stale, the entry lives on.
    redis.call('ZREM', DL, text)
    redis.call('HDEL', FX, text)
  end
  -- A value with time left expires within this millisecond; the next pass takes it.
end
local first = redis.call('ZRANGE', DL, 0, 0, 'WITHSCORES')
local earliest = -1
if first[2] then earliest = int(tonumber(first[2])) end
return reply({#due, earliest})
