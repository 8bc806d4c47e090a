-- upsert (common.lua) of several entries of several partitions that one node serves,
-- in one call, for caches of the same settings: put_batch.lua's way (no declared keys;
-- each entry's partition is checked, entry_served_here; -1: not done, send it alone
-- through upsert.lua),
-- with the settings, the server time and the subscribers read once, and evictions once
-- per partition at the end.
-- ARGV: policy kind, duration, max-idle, budget (setup's ARGV[1..4]), origin, channel
-- suffix, event mode (0..2), then per entry: partition key prefix, text, blob, ttl ms
-- (-1 none), key-only blob.
-- Result: per entry, upsert's (a packed integer), or -1.
local origin, suffix, mode = ARGV[5], ARGV[6], ARGV[7]
-- (Compared, not parsed: a `tonumber` is a `strtod`, about 1,200 instructions.)
if mode == '0' then mode = 0 elseif mode == '2' then mode = 2 else mode = tonumber(mode) end
-- The entries' channels, named only when someone may listen (a name made costs the
-- server).
local named = {}
begin_batch(mode, (#ARGV - 7) / 5, function()
  for i = 8, #ARGV, 5 do named[#named + 1] = ARGV[i] .. suffix end
  return named
end)
settings(ARGV[1], ARGV[2], ARGV[3], ARGV[4])
clock()
-- One server time for the batch, but each entry of a partition a later last use (a
-- microsecond each) than the partition's entries before it in the batch, so that LRU
-- order stays the order of the writes: with a budget of one, a second creation in a
-- partition evicts the first, as separate calls would. The last use of a partition's
-- entry is the server time less the number of the partition's entries after it in the
-- batch: usually every entry has a partition of its own, and one formatted time serves
-- them all.
local base = TICK
-- Per partition (key prefix), how many of its entries are still to come.
local left = {}
for i = 8, #ARGV, 5 do left[ARGV[i]] = (left[ARGV[i]] or 0) + 1 end
-- The formatted last uses by entries to come (made when a partition repeats).
local ticks
-- Each partition evicts after its last entry (defer_evictions in common.lua).
defer_evictions()
local out = {}
local n = 0
for i = 8, #ARGV, 5 do
  n = n + 1
  local prefix, text = ARGV[i], ARGV[i + 1]
  local after = left[prefix] - 1
  left[prefix] = after
  LATER = after > 0
  if after ~= base - TICK then
    if not ticks then ticks = {} end
    ticks[base - TICK] = TICK_ARG
    TICK = base - after
    TICK_ARG = ticks[after]
  end
  -- Without names, nobody listens: the channel is never asked for. (setup_prefix's
  -- work, without its call.)
  begin(prefix, nil, nil, nil, nil, mode, origin, named[n] or '')
  if entry_served_here(text) then
    local ttl = ARGV[i + 3]
    if ttl == '-1' then ttl = -1 else ttl = tonumber(ttl) end
    out[n] = upsert(text, ARGV[i + 2], ttl, ARGV[i + 4])
    if not LATER and GROWN[prefix] then out[n] = evict_rest(out[n]) end
  else
    out[n] = -1
  end
end
GROWN = nil
return out
