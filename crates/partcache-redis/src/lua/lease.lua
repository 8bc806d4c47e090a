-- A read that, on a miss, may take the key's lease (the core's `lease` module): the
-- lease key `<P>l:<text>` (common.lua) names the caller that loads the key's value,
-- for the lease's time to live. A write that finds the key absent voids a live lease
-- (void_lease in common.lua), so that its holder's put is refused (lease_put.lua).
-- ARGV[8..]: text, token (hex digits), lease ttl ms, whether the caller waited (1: it
-- asked before and the lease was held; 0: a first ask).
-- Result: {1, blob}: a hit, read as get.lua reads it; {0}: the caller holds the lease;
-- {2, ms left}: another caller holds it; {3}: its holder just ended it without a value
-- (lease_release.lua) while this caller waited: load beside the other waiters, and
-- store nothing. A first ask over a released lease takes it, as over a free one;
-- need('access') for a hit under a custom policy not asked for its access duration.
local text = ARGV[FIRST]
local k = ek(text)
local v = rcall('GET', k)
if v then
  -- A custom policy's access duration, asked first when not given (need()).
  local lacks = KIND == 5 and access_lacks()
  if lacks then return need(lacks) end
  access(text, k, v)
  return reply({1, v})
end
local lk = lease_key(text)
local held = rcall('GET', lk)
if held == 'r' and ARGV[FIRST + 3] == '1' then
  return reply({3})
end
if held and held ~= 'x' and held ~= 'r' then
  return reply({2, rcall('PTTL', lk)})
end
-- Over a voided lease whose holder may still be loading, the new lease keeps the
-- mark, so that the old holder's put is still known as stale.
local lease = ARGV[FIRST + 1] .. '@' .. tick()
if held == 'x' then lease = 'x' .. lease end
rcall('SET', lk, lease, 'PX', ARGV[FIRST + 2])
-- The partition has a lease for that long at least (clear.lua).
local lv = leases_key()
if rcall('PTTL', lv) < tonumber(ARGV[FIRST + 2]) then
  rcall('SET', lv, '1', 'PX', ARGV[FIRST + 2])
end
return reply({0})
