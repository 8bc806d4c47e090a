-- An unconditional put that wants no previous value (upsert in common.lua): write.lua's
-- most common case with four arguments fewer (every argument costs the server a Lua
-- string). ARGV[8..]: text, blob, ttl ms (-1 none), key-only blob.
-- Result: as write.lua's (write_reply).
return upsert(ARGV[FIRST], ARGV[FIRST + 1], tonumber(ARGV[FIRST + 2]), ARGV[FIRST + 3])
