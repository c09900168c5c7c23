"""Lua scripts that stamp LogIDs atomically with the append, one script call per batch.

Why a script: the Go original runs INCR and LPUSH as separate commands, so two publishers can
push in the opposite order of their LogIDs. Here one INCRBY reserves the whole batch's LogIDs
and the same script pushes the batch, so no other writer runs in between: list (or stream) order
is LogID order across any number of processes.

Why "tails": the client encodes each event with Go's field order, whose first key is LogID, and
sends the JSON after `{"LogID":<n>,`. The script prepends the real LogID by plain string
concatenation: no JSON work on the server, and the client never needs a second round trip to
learn the counter. LogIDs stay exact up to 2**53 (Lua numbers are doubles).

Each batch also carries its writer's id and batch number. The script records the last batch it
applied per writer (key `<key>:writer:<id>`, expiring after an hour), so a batch retried after a
lost reply (a socket timeout while Redis was paused, say) is not written twice.
"""

from __future__ import annotations

import json
from typing import Final

from eventbus_core import Event

__all__ = ["LOG_APPEND", "LOG_READ_NEW", "LOG_STILL_THERE", "STREAM_APPEND", "tail_of"]

_PREFIX: Final = b'{"LogID":'

# Shared head: skip a batch already applied, then reserve LogIDs first+1 .. last.
# `stamp(i)` builds the full JSON of item i; %d avoids Lua's "1e+14" number formatting.
_HEAD: Final = """
local batch = tonumber(ARGV[2])
local applied = tonumber(redis.call('GET', KEYS[3]) or '-1')
if applied >= batch then return -1 end
local n = #ARGV - {fixed}
local last = redis.call('INCRBY', KEYS[2], n)
local first = last - n
local function stamp(i)
  local id = first + i
  if id < 1e14 then return '{{"LogID":' .. id .. ',' .. ARGV[i + {fixed}] end
  return string.format('{{"LogID":%d,', id) .. ARGV[i + {fixed}]
end
"""

LOG_APPEND: Final = (
    _HEAD.format(fixed=4)
    + """
-- KEYS: list, seq, writer marker. ARGV: max_len, batch, ttl_ms, notify channel, tails...
local items = {}
for i = 1, n do items[i] = stamp(i) end
for i = 1, n, 1000 do
  redis.call('LPUSH', KEYS[1], unpack(items, i, math.min(i + 999, n)))
end
local max_len = tonumber(ARGV[1])
if max_len > 0 then redis.call('LTRIM', KEYS[1], 0, max_len - 1) end
local ttl = tonumber(ARGV[3])
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
if ARGV[4] ~= '' then redis.call('PUBLISH', ARGV[4], last) end
-- Last: a script that failed half-way (a key of the wrong type) is not rolled back, and
-- must not be marked as applied, or its retry would be skipped.
redis.call('SET', KEYS[3], batch, 'EX', 3600)
return last
"""
)
"""Append a batch to the LIST log (LPUSH newest first), trim, expire, notify subscribers."""

STREAM_APPEND: Final = (
    _HEAD.format(fixed=2)
    + """
-- KEYS: stream, seq, writer marker. ARGV: max_len, batch, tails...
local max_len = tonumber(ARGV[1])
for i = 1, n do
  if max_len > 0 then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', max_len, '*', 'data', stamp(i))
  else
    redis.call('XADD', KEYS[1], '*', 'data', stamp(i))
  end
end
redis.call('SET', KEYS[3], batch, 'EX', 3600)  -- last, as in the list script
return last
"""
)
"""Append a batch to the stream, one entry per event with field `data`, approximately trimmed."""

LOG_READ_NEW: Final = """
-- KEYS: list, seq. ARGV: last LogID seen, most entries to return.
-- Returns {seq, lo, hi, entries}: entries are list indexes lo..hi, the oldest events newer
-- than ARGV[1] that are still in the list (index i holds LogID seq - i).
local seq = tonumber(redis.call('GET', KEYS[2]) or '0')
local last = tonumber(ARGV[1])
if seq < last then return {seq, 0, -1, {}} end
-- A Go writer runs INCR and LPUSH separately: between the two the counter is ahead of the
-- list. Then read only up to the LogID actually at the head, and the rest next time.
local head = redis.call('LINDEX', KEYS[1], 0)
local head_id = head and tonumber(string.match(head, '^%s*{%s*"LogID"%s*:%s*(%d+)%s*,'))
if head_id and head_id > 0 and head_id < seq then seq = head_id end
if seq <= last then return {seq, 0, -1, {}} end
local len = redis.call('LLEN', KEYS[1])
local hi = math.min(seq - last, len) - 1
if hi < 0 then return {seq, 0, -1, {}} end
local lo = math.max(hi - tonumber(ARGV[2]) + 1, 0)
return {seq, lo, hi, redis.call('LRANGE', KEYS[1], lo, hi)}
"""
"""Read only what is new since a LogID, oldest first in chunks, atomically with the counter."""

LOG_STILL_THERE: Final = """
-- KEYS: list, seq. ARGV: a LogID, the raw entry that held it.
-- 1 if that entry is still where the counter says it is (or was trimmed away), else 0.
local seq = tonumber(redis.call('GET', KEYS[2]) or '0')
local last = tonumber(ARGV[1])
if seq < last then return 0 end
local raw = redis.call('LINDEX', KEYS[1], seq - last)
if not raw or raw == ARGV[2] then return 1 end
return 0
"""
"""After a reconnect: is the log the one we were reading, or did Redis restart empty and its
counter already pass our position again (which the counter alone cannot show)?"""


def tail_of(event: Event) -> bytes:
    """Return `event`'s Go wire JSON without its leading `{"LogID":<n>,` (the script adds it)."""
    data = event.to_json()
    if data.startswith(_PREFIX):
        comma = data.find(b",", len(_PREFIX))
        if comma > 0:
            return data[comma + 1 :]
    # The encoder changed its key order: rebuild the tail the slow but certain way.
    doc = {k: v for k, v in json.loads(data).items() if k.lower() != "logid"}
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)[1:].encode()
