-- The claims on a cache's reaping (store/reaper.rs): one process of all those that
-- opened the cache reaps it (the holder), one other watches the holder's claim
-- closely (the deputy), so that the background work does not grow with their number.
-- KEYS[1]: the holder's claim; KEYS[2]: the deputy's; ARGV[1]: the caller's id;
-- ARGV[2]: the claim time (ms), 0 to give up whichever the caller holds.
-- Result: {role, ms left of the holder's claim}, role 1 when the caller holds the
-- claim now, 2 when it is the deputy, 0 otherwise.
local id = ARGV[1]
local ms = tonumber(ARGV[2])
local holder = rcall('GET', KEYS[1])
local deputy = rcall('GET', KEYS[2])
if ms == 0 then
  if holder == id then rcall('DEL', KEYS[1]) end
  if deputy == id then rcall('DEL', KEYS[2]) end
  return {0, 0}
end
-- Free, the caller's, or a value without a deadline (no claim this function wrote).
local function free(key, value)
  return value == false or value == id or rcall('PTTL', key) < 0
end
if free(KEYS[1], holder) then
  rcall('SET', KEYS[1], id, 'PX', ms)
  if deputy == id then rcall('DEL', KEYS[2]) end
  return {1, ms}
end
local left = rcall('PTTL', KEYS[1])
if free(KEYS[2], deputy) then
  rcall('SET', KEYS[2], id, 'PX', ms)
  return {2, left}
end
return {0, left}
