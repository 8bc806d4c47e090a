-- Drops up to ARGV[8] entries of the partition; ARGV[9] = 1 announces each live one
-- with a Removed event and counts it. On a cache without an index, the entries are
-- the texts ARGV[10..] (found by a key scan, store/clear.rs) instead of the index's first
-- ones. Result: {removed, entries left in the index (0 without one)}.
local announce = ARGV[FIRST + 1] == '1'
local removed = 0
local texts
if INDEXED then
  texts = rcall('ZRANGE', IX, 0, tonumber(ARGV[FIRST]) - 1)
else
  texts = {}
  for i = FIRST + 2, #ARGV do texts[#texts + 1] = ARGV[i] end
end
for i = 1, #texts do
  local text = texts[i]
  local k = ek(text)
  if announce then
    local v = rcall('GET', k)
    if v then
      emit('R', v)
      removed = removed + 1
    end
  end
  rcall('DEL', k)
  forget(text)
end
-- Voids the leases of keys being loaded now (no entry of theirs was dropped): a load
-- that read the system of record before this clear must not be stored after it.
local leases_live = rcall('PTTL', leases_key())
if leases_live > 0 then rcall('SET', cleared_key(), tick(), 'PX', leases_live) end
-- Tells near caches to drop the partition (listeners ignore this kind: clear has no
-- events in JCache).
emit('Z', '')
local left = 0
if INDEXED then left = rcall('ZCARD', IX) end
return reply({removed, left})
