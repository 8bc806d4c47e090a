-- The common put (fast_put in common.lua) of several entries of several partitions
-- that one node serves, in one call (store.rs gathers the puts that wait while
-- another is on its way to the same node). Declares no keys: it is registered with
-- the `allow-cross-slot-keys` flag, and each entry first checks that every key its
-- put touches is served here right now (one `EXISTS` of them, which Redis refuses for
-- a slot this node does not serve, or one half moved away: MOVED, ASK, TRYAGAIN).
-- An entry that fails the check is left alone, for the caller to send by itself,
-- with its keys declared (put.lua), which the router follows through redirections.
-- ARGV: origin, channel suffix (`ev`, or `ev:<db>`), then per entry: partition key
-- prefix, event mode (0..2, no events in the reply), text, blob.
-- Result: per entry, fast_put's (a packed integer), or -1: not done, send it alone.
local origin, suffix = ARGV[1], ARGV[2]
local out = {}
for i = 3, #ARGV, 4 do
  local prefix, text = ARGV[i], ARGV[i + 2]
  setup_prefix(prefix, tonumber(ARGV[i + 1]), origin, suffix)
  local k = prefix .. 'e:' .. text
  if served_here(k) then
    out[#out + 1] = fast_put(k, text, ARGV[i + 3])
  else
    out[#out + 1] = -1
  end
end
return out
