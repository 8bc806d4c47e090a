-- Whether each entry of ARGV[8..] (texts) is live, without counting as an access.
-- Result: 1 or 0 per text, in order.
local out = {}
for i = FIRST, #ARGV do
  out[#out + 1] = rcall('EXISTS', ek(ARGV[i]))
end
return reply(out)
