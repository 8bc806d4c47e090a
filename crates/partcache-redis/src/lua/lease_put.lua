-- Stores a loaded value under its lease (lease.lua): only while the lease is the
-- caller's and no write of the key, nor a clear of its partition, voided it; ends the
-- lease. ARGV[8..]: text, token, blob, ttl ms (-1 none), key-only blob.
-- Result: 1 stored (0: a zero creation expiry kept it out), -1 refused because a
-- write or a clear voided the lease (a stale set), -2 refused because the lease
-- expired or another caller took it over; need('creation') when a custom policy's
-- creation duration was not given (the lease stays the caller's).
local text, token = ARGV[FIRST], ARGV[FIRST + 1]
local lk = lease_key(text)
local held = rcall('GET', lk)
local ours, granted = lease_of(held, token)
if not ours then
  if held and sub(held, 1, 1) == 'x' then return reply(-1) end
  return reply(-2)
end
-- A clear of the partition since the lease was granted voids it (clear.lua).
local cleared = rcall('GET', cleared_key())
if cleared and granted and granted <= tonumber(cleared) then
  rcall('SET', lk, 'x', 'KEEPTTL')
  return reply(-1)
end
-- Every write that creates the key voids the lease; should one have slipped past it
-- (a slot migration in between, see void_lease), the value stored now is newer.
local cur = current(text)
if cur then
  rcall('SET', lk, 'x', 'KEEPTTL')
  return reply(-1)
end
local lacks = KIND == 5 and put_lacks(false)
if lacks then return need(lacks) end
if sub(held, 1, 1) == 'x' then
  -- Keep the mark for the voided holder before this one (see lease.lua).
  rcall('SET', lk, 'x', 'KEEPTTL')
else
  rcall('DEL', lk)
end
return reply(put(text, ARGV[FIRST + 2], ARGV[FIRST + 4], tonumber(ARGV[FIRST + 3]), false))
