-- Record that windows were emitted, with the alert states they led to; never moves back.
--
-- KEYS[1] emitted hash  "<aggregate>" -> last emitted window end, "s:<alert>" -> state JSON
-- KEYS[2] meta hash     "floor"
-- ARGV[1] JSON {m: [[name, end, state_json|nil]...], floor: time|nil}
-- Returns the names whose mark moved forward.
local doc = cjson.decode(ARGV[1])
local moved = {}
for _, m in ipairs(doc.m) do
  local cur = redis.call('HGET', KEYS[1], m[1])
  if (not cur) or tonumber(cur) < tonumber(m[2]) then
    redis.call('HSET', KEYS[1], m[1], m[2])
    if m[3] then
      redis.call('HSET', KEYS[1], 's:' .. m[1], m[3])
    end
    table.insert(moved, m[1])
  end
end
if doc.floor then
  local cur = redis.call('HGET', KEYS[2], 'floor')
  if (not cur) or tonumber(cur) < tonumber(doc.floor) then
    redis.call('HSET', KEYS[2], 'floor', doc.floor)
  end
end
return moved
