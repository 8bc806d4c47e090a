-- One step of an iteration: ZSCAN of the index from cursor ARGV[8], about ARGV[9]
-- members. Each live entry returned is an access (JSR-107 §6.4; access() in
-- common.lua), but under a custom policy, whose access duration the client asks per
-- entry: it reads the entries returned with get.lua (store/asking.rs).
-- Result: {next cursor, {text, blob, text, blob, ...}} for live entries.
local r = rcall('ZSCAN', IX, ARGV[FIRST], 'COUNT', tonumber(ARGV[FIRST + 1]))
local out = {}
local members = r[2]
for i = 1, #members, 2 do
  local k = ek(members[i])
  local v = rcall('GET', k)
  if v then
    if KIND ~= 5 then access(members[i], k, v) end
    out[#out + 1] = members[i]
    out[#out + 1] = v
  end
end
return reply({r[1], out})
