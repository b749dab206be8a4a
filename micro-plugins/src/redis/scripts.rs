//! The Lua scripts behind every [`RedisStore`](super::RedisStore) operation: each runs
//! atomically in redis-server, so a condition is checked and its write applied with nothing in
//! between, and a batch is applied whole or not at all.
//!
//! Record keys are passed as `KEYS`; only `LIST` builds record keys itself (from the index's
//! members), which is fine because every key of a namespace shares one hash tag, so one slot.

/// `KEYS[1]` the index, `KEYS[2..]` the record keys; `ARGV` per write: key, value, condition
/// (`n` none, `a` absent, `v` version), the version, TTL in ms (0: none). Checks every
/// condition, then writes. Returns `{1, version…}` or `{0, index of the failed write, found
/// version (0: none)}`.
pub(super) const PUT: &str = r"
local n = #KEYS - 1
local versions = {}
for i = 1, n do
  local b = (i - 1) * 5
  local cond, want = ARGV[b + 3], tonumber(ARGV[b + 4])
  local found = tonumber(redis.call('HGET', KEYS[i + 1], 'version') or '0')
  if (cond == 'a' and found ~= 0) or (cond == 'v' and found ~= want) then
    return {0, i - 1, found}
  end
  versions[i] = found + 1
end
for i = 1, n do
  local b = (i - 1) * 5
  local rk, ttl = KEYS[i + 1], tonumber(ARGV[b + 5])
  redis.call('HSET', rk, 'value', ARGV[b + 2], 'version', tostring(versions[i]))
  if ttl > 0 then
    redis.call('PEXPIRE', rk, ttl)
  else
    redis.call('PERSIST', rk)
  end
  redis.call('ZADD', KEYS[1], 0, ARGV[b + 1])
end
return {1, unpack(versions)}
";

/// `KEYS[1]` the index, `KEYS[2..]` the record keys; `ARGV[1]` the version the first key
/// must have (0: no condition), `ARGV[2..]` the keys. Returns `{1, deleted (0/1)…}` or
/// `{0, 0, found version (0: none)}`.
pub(super) const DELETE: &str = r"
local want = tonumber(ARGV[1])
if want > 0 then
  local found = tonumber(redis.call('HGET', KEYS[2], 'version') or '0')
  if found ~= want then
    return {0, 0, found}
  end
end
local out = {1}
for i = 2, #KEYS do
  out[i] = redis.call('DEL', KEYS[i])
  redis.call('ZREM', KEYS[1], ARGV[i])
end
return out
";

/// `KEYS` the record keys. Returns per key `false` or `{value, version, PTTL}` (PTTL -1: no
/// expiry).
pub(super) const GET: &str = r"
local out = {}
for i = 1, #KEYS do
  local fields = redis.call('HMGET', KEYS[i], 'value', 'version')
  if fields[2] then
    out[i] = {fields[1], fields[2], redis.call('PTTL', KEYS[i])}
  else
    out[i] = false
  end
end
return out
";

/// `KEYS[1]` the index; `ARGV` the record key prefix, ZRANGEBYLEX min and max, the page size.
/// Walks the index in byte order, drops members whose record expired, and returns `{more
/// (0/1), {key…}}`.
pub(super) const LIST: &str = r"
local index, prefix, min, max = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local limit = tonumber(ARGV[4])
local out = {}
local more = 0
local chunk = limit + 1
while true do
  local members = redis.call('ZRANGEBYLEX', index, min, max, 'LIMIT', 0, chunk)
  for _, m in ipairs(members) do
    if redis.call('EXISTS', prefix .. m) == 1 then
      if #out == limit then
        more = 1
        break
      end
      out[#out + 1] = m
    else
      redis.call('ZREM', index, m)
    end
  end
  if more == 1 or #members < chunk then
    break
  end
  min = '(' .. members[#members]
end
return {more, out}
";
