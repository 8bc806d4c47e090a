-- One conditional write. ARGV[8..]: text, condition (0 always, 1 if absent, 2 if
-- present, 3 if equals), expected blob, action (1 put, 2 remove), blob, ttl ms (-1
-- none), want previous (0/1), key-only blob. (An unconditional put that wants no
-- previous value is upsert.lua's.)
-- Result: {existed, applied, previous blob or nil}, or its packed form (write_reply);
-- need() when a custom policy's duration the write applies was not given.
local text = ARGV[FIRST]
local cond = tonumber(ARGV[FIRST + 1])
local expected = ARGV[FIRST + 2]
local action = tonumber(ARGV[FIRST + 3])
local blob = ARGV[FIRST + 4]
local ttl = tonumber(ARGV[FIRST + 5])
local want = ARGV[FIRST + 6] == '1'
local keyonly = ARGV[FIRST + 7]

local cur = current(text)
local existed = 0
if cur then existed = 1 end
local prev = false
if want and cur then prev = cur end
local holds = cond == 0 or (cond == 1 and not cur) or (cond == 2 and cur ~= false)
  or (cond == 3 and cur == expected)
if not holds then
  -- JSR-107 §6.4: `remove(k, v)` and `replace(k, v, new)` that find another value are
  -- accesses; every other write that does not apply (`putIfAbsent` on a present key,
  -- `replace` on an absent one) touches nothing.
  if cond == 3 and cur then
    local lacks = KIND == 5 and access_lacks()
    if lacks then return need(lacks) end
    access(text, ek(text), cur)
  end
  return write_reply(existed, 0, prev)
end
local applied
if action == 1 then
  local lacks = KIND == 5 and put_lacks(cur)
  if lacks then return need(lacks) end
  applied = put(text, blob, keyonly, ttl, cur)
else
  applied = remove(text, cur)
end
return write_reply(existed, applied, prev)
