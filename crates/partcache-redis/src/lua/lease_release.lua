-- Ends the caller's lease (lease.lua) without a value: its load failed or found
-- none, or its value may not be stored. For a short while the lease reads `r`
-- (released): the callers that waited for it, in every process, load at once side by
-- side and store nothing, as a local flight's waiters do when their leader ends
-- without a value, instead of taking the lease one after another (a miss that is
-- never stored, such as a `no-store` response, would be loaded by one process at a
-- time). After it, the next caller leads. ARGV[8..]: text, token, how long the mark
-- stays (ms). Result: 0.
local text, token = ARGV[FIRST], ARGV[FIRST + 1]
local lk = lease_key(text)
local held = rcall('GET', lk)
if lease_of(held, token) then
  if sub(held, 1, 1) == 'x' then
    rcall('SET', lk, 'x', 'KEEPTTL')
  else
    rcall('SET', lk, 'r', 'PX', ARGV[FIRST + 2])
  end
end
return reply(0)
