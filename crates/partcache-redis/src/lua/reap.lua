-- Reclaims up to ARGV[8] entries whose deadline passed: Redis already dropped their
-- values; this drops their bookkeeping and announces each with an Expired event.
-- Result: {how many deadlines were due (the caller comes back when it hit the limit),
-- the earliest deadline left (ms), or -1 when none}.
local due = redis.call('ZRANGEBYSCORE', DL, '-inf', int(NOW), 'LIMIT', 0, tonumber(ARGV[FIRST]))
for _, text in ipairs(due) do
  -- A value still there expires within this millisecond; the next pass takes it.
  if redis.call('EXISTS', ek(text)) == 0 then gone(text) end
end
local first = redis.call('ZRANGE', DL, 0, 0, 'WITHSCORES')
local earliest = -1
if first[2] then earliest = int(tonumber(first[2])) end
return reply({#due, earliest})
