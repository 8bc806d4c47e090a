-- An unconditional put that wants no previous value: write.lua's most common case
-- with four arguments fewer (every argument costs the server a Lua string).
-- ARGV[8..]: text, blob, ttl ms (-1 none), key-only blob.
-- Result: as write.lua's (write_reply).
local text, blob, keyonly = ARGV[FIRST], ARGV[FIRST + 1], ARGV[FIRST + 3]
local ttl = tonumber(ARGV[FIRST + 2])
local existed = put_blind(text, blob, keyonly, ttl)
if existed then return write_reply(existed, 1, false) end
local cur = current(text)
existed = 0
if cur then existed = 1 end
return write_reply(existed, put(text, blob, keyonly, ttl, cur), false)
