-- Claim revision numbers for performance windows at close: a number is bound to one content.
--
-- KEYS[1] marks hash     "r:<end>" -> "<revision>:<digest>" of the window's last claimed revision
-- KEYS[2] unpublished    hash "<end>:<revision>" -> body JSON, claimed and not yet confirmed
-- KEYS[3] versions hash  bucket start -> changes applied to it (only grows; feedback_apply.lua)
-- ARGV[1] JSON {w: [[end, digest, body, lo, hi, versions]...]}: the caller computed the
--         window ending at end from the buckets [lo, hi) when their versions summed to
--         versions
--
-- A window whose buckets changed since the caller read them is stale: it claims nothing (the
-- change left the bucket dirty, so a later close computes it afresh). Otherwise, when its
-- digest equals the last claimed one there is nothing new; else it claims revision last + 1
-- (0 for the first) with this digest and stores the body until a confirm says it was
-- published. Returns {stale ends, every unpublished "<end>:<revision>", body, ...}: the
-- caller publishes all of them, whoever claimed them (a claimer that died before producing,
-- or another monitor between its claim and its confirm), so no claimed revision is lost and
-- a republished one is byte for byte the same event.
local doc = cjson.decode(ARGV[1])
-- bucket starts in order with running sums, so each window's sum is two binary searches
local flat = redis.call('HGETALL', KEYS[3])
local starts = {}
local version = {}
for i = 1, #flat, 2 do
  local s = tonumber(flat[i])
  table.insert(starts, s)
  version[s] = tonumber(flat[i + 1])
end
table.sort(starts)
local cum = {[0] = 0}
for i, s in ipairs(starts) do
  cum[i] = cum[i - 1] + version[s]
end
-- the running sum of the versions of buckets starting before x
local function before(x)
  local lo, hi = 1, #starts + 1
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if starts[mid] < x then lo = mid + 1 else hi = mid end
  end
  return cum[lo - 1]
end
local stale = {}
for _, w in ipairs(doc.w) do
  local sum = before(tonumber(w[5])) - before(tonumber(w[4]))
  if sum ~= tonumber(w[6]) then
    table.insert(stale, w[1])
  else
    local field = 'r:' .. w[1]
    local cur = redis.call('HGET', KEYS[1], field)
    local rev, digest = -1, nil
    if cur then
      local r, d = string.match(cur, '^(-?%d+):(.*)$')
      rev, digest = tonumber(r), d
    end
    if digest ~= w[2] then
      rev = rev + 1
      redis.call('HSET', KEYS[1], field, string.format('%d', rev) .. ':' .. w[2])
      redis.call('HSET', KEYS[2], w[1] .. ':' .. string.format('%d', rev), w[3])
    end
  end
end
return {stale, redis.call('HGETALL', KEYS[2])}
