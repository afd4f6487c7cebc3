package redisbroker

import "github.com/redis/go-redis/v9"

// Keys of one channel, under the broker's prefix P:
//
//	P:m:CHANNEL       hash: e epoch, o newest offset, l newest time (µs) dropped
//	                  from history or never kept (0: never), b when the stream
//	                  was made (µs), t history TTL (ms) of the last publish
//	P:h:CHANNEL       list: retained publications, oldest first, each
//	                  "TIME_US:OFFSET:BODY"
//	P:i:LEN:CHANNEL KEY   string: "EPOCH:OFFSET" an idempotency key published
//	                  (the channel framed by its length, so that no channel
//	                  and key pair can spell another's)
//
// The meta hash and the history list always expire together, so a history
// never outlives its epoch or the other way round. One key is the whole
// instance's (see Broker.verify; it never expires):
//
//	P:instance        hash: e the instance id (every epoch's salt), r the run
//	                  id of the Redis process it was last verified on, d "1"
//	                  while Redis was durable at every verification
//
// Pub/sub channels: a channel's publications and join markers go to
// P:c:CHANNEL, which the nodes with subscribers on it listen to;
// notifications go to P:pub, which every node listens to. Each message
// starts with its kind, then fields written as LENGTH ":" BYTES (see field):
//
//	p CHANNEL EPOCH OFFSET TIME_US ORIGIN BODY   a publication (publishScript), on P:c:CHANNEL
//	j CHANNEL JOIN_ID                            a join marker (readScript), on P:c:CHANNEL
//	n NODE KIND PAYLOAD                          a notification (Notify), on P:pub
//
// BODY is EVENT FROM DATA (encodeBody), and KIND and PAYLOAD are unframed,
// to the end of the message.

// luaCommon are the helpers both scripts start with. Their last key is the
// instance key and their last argument the instance id the caller's salt
// carries: a script refuses to run (HERALDINSTANCE) when they differ, so no
// node reads or writes a history it has not verified.
const luaCommon = `
if redis.call('HGET', KEYS[#KEYS], 'e') ~= ARGV[#ARGV] then
  return redis.error_reply('HERALDINSTANCE the instance id is not the caller\'s')
end
local function field(s) s = tostring(s) return #s .. ':' .. s end
local t = redis.call('TIME')
local nows = t[1] .. string.rep('0', 6 - #t[2]) .. t[2]
local now = tonumber(nows)
local meta, hist = KEYS[1], KEYS[2]
local epoch = redis.call('HGET', meta, 'e')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', hist)
  redis.call('HSET', meta, 'e', epoch, 'o', 0, 'l', 0, 'b', nows, 't', 0)
end
local function trim(ttl)
  if ttl <= 0 then return end
  local cut = now - ttl * 1000
  while true do
    local e = redis.call('LINDEX', hist, 0)
    if not e then return end
    local ts = string.match(e, '^(%d+):')
    if tonumber(ts) > cut then return end
    redis.call('LPOP', hist)
    redis.call('HSET', meta, 'l', ts)
  end
end
local function keep(ttl)
  local ms = math.max(tonumber(ARGV[2]), ttl)
  redis.call('PEXPIRE', meta, ms)
  redis.call('PEXPIRE', hist, ms)
end
`

// publishScript publishes one publication.
//
//	KEYS: meta, history, idempotency key (meta again when none), instance
//	ARGV: new epoch, stream TTL ms (at least the history TTL and the
//	      idempotency window), history size, history TTL ms,
//	      idempotency window ms (0: none), the channel's pub/sub channel,
//	      channel, origin, body, instance id
//
// Returns {duplicate (0/1), offset, epoch, time µs}.
var publishScript = redis.NewScript(luaCommon + `
local size, ttl, window = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
if window > 0 then
  local prev = redis.call('GET', KEYS[3])
  if prev then
    -- A key from an older epoch of the channel is not a duplicate in this one.
    local pe, po = string.match(prev, '^(.*):(%d+)$')
    if pe == epoch then return {1, po, epoch, nows} end
  end
end
-- Lua 5.1 writes a number with %.14g (1e+14); %d keeps every digit.
local off = string.format('%d', redis.call('HINCRBY', meta, 'o', 1))
redis.call('HSET', meta, 't', ttl)
trim(ttl)
if size > 0 then
  redis.call('RPUSH', hist, nows .. ':' .. off .. ':' .. ARGV[9])
  while redis.call('LLEN', hist) > size do
    local old = redis.call('LPOP', hist)
    redis.call('HSET', meta, 'l', string.match(old, '^(%d+):'))
  end
else
  redis.call('HSET', meta, 'l', nows)
end
if window > 0 then redis.call('SET', KEYS[3], epoch .. ':' .. off, 'PX', window) end
keep(ttl)
redis.call('PUBLISH', ARGV[6], 'p' .. field(ARGV[7]) .. field(epoch) .. field(off) .. field(nows) .. field(ARGV[8]) .. ARGV[9])
return {0, off, epoch, nows}
`)

// readScript reads a channel's position and, when asked, its history; for
// a join it also publishes the join marker, in the same atomic step, so the
// marker reaches every node right after the position it read.
//
//	KEYS: meta, history, instance
//	ARGV: new epoch, stream TTL ms, history size (0: use the stored TTL),
//	      history TTL ms, items (1/0), pub/sub channel ("" for no marker),
//	      marker, instance id
//
// Returns {epoch, offset, lost µs, born µs, items}.
var readScript = redis.NewScript(luaCommon + `
local ttl = tonumber(ARGV[4])
if tonumber(ARGV[3]) > 0 then
  redis.call('HSET', meta, 't', ttl)
else
  ttl = tonumber(redis.call('HGET', meta, 't') or '0')
end
trim(ttl)
keep(ttl)
local v = redis.call('HMGET', meta, 'o', 'l', 'b')
local items = {}
if ARGV[5] == '1' then items = redis.call('LRANGE', hist, 0, -1) end
if ARGV[6] ~= '' then redis.call('PUBLISH', ARGV[6], ARGV[7]) end
return {epoch, v[1], v[2], v[3], items}
`)

// verifyScript decides whether the instance's history survived (see
// Broker.verify), on the Redis process it runs on, and records the verdict.
//
//	KEYS: instance
//	ARGV: a new instance id, "1" if Redis is durable now else "0", then for
//	      each channel the node delivered: its meta key, stored epoch and
//	      newest offset the node delivered
//
// Returns {instance id, run id, verdict}: "1" the history is trusted, "0"
// it is not (the instance got a new id), "new" there was no instance key.
var verifyScript = redis.NewScript(`
local run = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
local v = redis.call('HMGET', KEYS[1], 'e', 'r', 'd')
local id, durable = v[1], ARGV[2]
-- A replica promoted to master keeps the old replication id as its second
-- one: it may have lagged, so a new master is never trusted on durability.
local promoted = string.match(redis.call('INFO', 'replication'), 'second_repl_offset:(%-?%d+)') ~= '-1'
local ok = id and (v[2] == run or (v[3] == '1' and durable == '1' and not promoted))
if ok then
  for i = 3, #ARGV, 3 do
    local m = redis.call('HMGET', ARGV[i], 'e', 'o')
    local have, want = m[2] or '', ARGV[i + 2]
    -- Offsets as decimal strings: shorter is smaller, then by digits.
    if m[1] == ARGV[i + 1] and (#have < #want or (#have == #want and have < want)) then
      ok = false
      break
    end
  end
end
if ok then
  if v[3] ~= '1' then durable = '0' end
else
  id = ARGV[1]
end
redis.call('HSET', KEYS[1], 'e', id, 'r', run, 'd', durable)
return {id, run, ok and '1' or (v[1] and '0' or 'new')}
`)
