-- The partition's entry count and an estimate of its blob bytes: the mean length of
-- up to ARGV[8] random entries times the count. Result: {entries, bytes}.
local n = rcall('ZCARD', IX)
local bytes = 0
if n > 0 then
  local total, seen = 0, 0
  for _, text in ipairs(rcall('ZRANDMEMBER', IX, tonumber(ARGV[FIRST]))) do
    local len = rcall('STRLEN', ek(text))
    if len > 0 then
      total = total + len
      seen = seen + 1
    end
  end
  if seen > 0 then bytes = floor(total / seen * n) end
end
return reply({n, bytes})
