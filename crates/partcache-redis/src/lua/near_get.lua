-- Reads the entries ARGV[8..] (texts) for a near cache: each found blob with the time
-- it has left (PTTL, ms; -1: no deadline). Near caches exist only on caches whose reads
-- do not extend expiry (the core refuses the others), so a read only refreshes the LRU
-- order when the cache has a budget, as get.lua does.
-- Result: {blob, pttl} or false per text, in order.
local out = {}
for i = FIRST, #ARGV do
  local text = ARGV[i]
  local k = ek(text)
  local v = rcall('GET', k)
  if v then
    if BUDGET > 0 then rcall('ZADD', IX, 'XX', tick(), text) end
    out[#out + 1] = {v, rcall('PTTL', k)}
  else
    out[#out + 1] = false
  end
end
return reply(out)
