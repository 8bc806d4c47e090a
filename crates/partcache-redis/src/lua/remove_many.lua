-- Removes the entries ARGV[8..] (texts). Result: how many were live.
local removed = 0
for i = FIRST, #ARGV do
  local text = ARGV[i]
  removed = removed + remove(text, current(text))
end
return reply(removed)
