-- Ends the caller's lease (lease.lua) without a value: its load failed or found
-- none, and the next caller leads at once. ARGV[8..]: text, token. Result: 0.
local text, token = ARGV[FIRST], ARGV[FIRST + 1]
local lk = lease_key(text)
local held = redis.call('GET', lk)
if lease_of(held, token) then
  if string.sub(held, 1, 1) == 'x' then
    redis.call('SET', lk, 'x', 'KEEPTTL')
  else
    redis.call('DEL', lk)
  end
end
return reply(0)
