-- Reclaims up to ARGV[7] entries whose deadline passed: Redis already dropped their
-- values; this drops their bookkeeping and announces each with an Expired event.
-- Result: how many deadlines were due (the caller comes back when it hit the limit).
local due = redis.call('ZRANGEBYSCORE', DL, '-inf', int(NOW), 'LIMIT', 0, tonumber(ARGV[FIRST]))
for _, text in ipairs(due) do
  -- A value still there expires within this millisecond; the next pass takes it.
  if redis.call('EXISTS', ek(text)) == 0 then gone(text) end
end
return reply(#due)
