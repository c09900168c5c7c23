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
applied per writer, with the batch's last LogID (key `<key>:writer:<id>`, `<batch>:<last>`,
expiring after an hour), so a batch retried after a lost reply (a socket timeout while Redis was
paused, say) is not written twice, and the retry's reply still says where the batch ended.

And each batch carries the writer's lease: the token the writer last stored in
`<key>:writer:<id>:lease` (a key with a short expiry, `PX`), and how many milliseconds of it must
remain. A batch that reaches Redis after the lease ran out (or after the writer renewed it with a
new token) is refused (-2), not applied. That bounds when a batch can still be applied: a batch
the writer gave up on at `stop()` cannot be applied later by a server that was paused or frozen
with the batch in its socket buffer (see `_lease.py`).
"""

from __future__ import annotations

from typing import Final

from eventbus_core import Event

__all__ = [
    "FIXED",
    "LOG_APPEND",
    "LOG_NOW",
    "LOG_READ_NEW",
    "STREAM_APPEND",
    "STREAM_COUNT_UNREAD_TRIMMED",
    "STREAM_CREATE_GROUP",
    "STREAM_RECLAIM",
    "STREAM_RELEASE",
    "tail_of",
]

FIXED: Final = 4
"""Leading ARGV every append script takes before the backend's own: batch, lease token, lease
milliseconds that must remain, lease milliseconds to extend to."""

# Shared head: skip a batch already applied (replying with its last LogID, as when it was
# applied), refuse one that outlived its lease, refuse a target of another type (the Go
# proxy's stream where this backend writes a list, say) before anything is written, then
# reserve LogIDs first+1 .. last. Without that check the INCRBY ran, then the push failed: the
# shared counter moved with nothing written, at every retry (helper-108).
# KEYS: target, seq, writer marker, writer lease.
# `stamp(i)` builds the full JSON of item i; %d avoids Lua's "1e+14" number formatting.
_HEAD: Final = """
local batch = tonumber(ARGV[1])
local marker = redis.call('GET', KEYS[3])
if marker then
  local applied, applied_last = string.match(marker, '^(%d+):(%d+)$')
  if tonumber(applied) >= batch then return tonumber(applied_last) end
end
if redis.call('GET', KEYS[4]) ~= ARGV[2] or redis.call('PTTL', KEYS[4]) < tonumber(ARGV[3]) then
  return -2
end
local held = redis.call('TYPE', KEYS[1])['ok']
if held ~= '{kind}' and held ~= 'none' then
  return redis.error_reply(
    'WRONGTYPE the key ' .. KEYS[1] .. ' holds a ' .. held .. ', not a {kind}')
end
local n = #ARGV - {fixed}
local last = redis.call('INCRBY', KEYS[2], n)
local first = last - n
local function stamp(i)
  local id = first + i
  if id < 1e14 then return '{{"LogID":' .. id .. ',' .. ARGV[i + {fixed}] end
  return string.format('{{"LogID":%d,', id) .. ARGV[i + {fixed}]
end
"""

# Shared tail. Last: a script that failed half-way (a key of the wrong type) is not rolled back,
# and must not be marked as applied, or its retry would be skipped.
_TAIL: Final = """
redis.call('PEXPIRE', KEYS[4], ARGV[4])
redis.call('SET', KEYS[3], string.format('%d:%d', batch, last), 'EX', 3600)
return last
"""

LOG_APPEND: Final = (
    _HEAD.format(fixed=FIXED + 3, kind="list")
    + """
-- ARGV after the fixed four: max_len, ttl_ms, notify channel, tails...
local items = {}
for i = 1, n do items[i] = stamp(i) end
for i = 1, n, 1000 do
  redis.call('LPUSH', KEYS[1], unpack(items, i, math.min(i + 999, n)))
end
local max_len = tonumber(ARGV[5])
if max_len > 0 then redis.call('LTRIM', KEYS[1], 0, max_len - 1) end
local ttl = tonumber(ARGV[6])
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
-- pcall: the wake-up is optional (subscribers poll too), and a user whose ACL refuses PUBLISH
-- failed the whole batch after its LPUSH, every retry writing it again (trial 193).
if ARGV[7] ~= '' then redis.pcall('PUBLISH', ARGV[7], last) end
"""
    + _TAIL
)
"""Append a batch to the LIST log (LPUSH newest first), trim, expire, notify subscribers."""

STREAM_APPEND: Final = (
    _HEAD.format(fixed=FIXED + 1, kind="stream")
    + """
-- ARGV after the fixed four: max_len, tails...
local max_len = tonumber(ARGV[5])
for i = 1, n do
  if max_len > 0 then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', max_len, '*', 'data', stamp(i))
  else
    redis.call('XADD', KEYS[1], '*', 'data', stamp(i))
  end
end
"""
    + _TAIL
)
"""Append a batch to the stream, one entry per event with field `data`, approximately trimmed."""

# The LogID counter as a number, or an error reply: `tonumber` of something else is nil, which
# ended the reply's table early (IndexError in the client, helper-113).
_SEQ: Final = """
local seq = tonumber(redis.call('GET', KEYS[2]) or '0')
if not seq then
  return redis.error_reply('ERR the LogID counter ' .. KEYS[2] .. ' is not an integer')
end
"""

LOG_NOW: Final = (
    """
-- KEYS: list, seq. Returns {seq, the entry at the head (false when the list is empty), length,
-- the entries below it (up to ARGV[1], newest first)}."""
    + _SEQ
    + """return {
  seq,
  redis.call('LINDEX', KEYS[1], 0),
  redis.call('LLEN', KEYS[1]),
  redis.call('LRANGE', KEYS[1], 1, tonumber(ARGV[1])),
}
"""
)
"""Where a new subscriber starts: the counter, the newest entry, the length and the entries
below the newest, read together."""

ANCHOR_CONTEXT: Final = 3
"""Entries below the anchor remembered with it, to tell it from an identical entry pushed since."""

LOG_READ_NEW: Final = (
    """
-- KEYS: list, seq. ARGV: 1 if an anchor is given else 0, the anchor (the raw entry read last),
-- most entries to return, where the anchor was ('' when unknown: its index from the head minus
-- the list's length, at the read that took it), how many entries below the new anchor to
-- return, then the entries that were below the anchor then, newest first.
-- Returns {seq, found, entries, length, lo, below}: entries are the oldest entries above the
-- anchor, newest first as LRANGE gives them, the newest of them at index lo (with nothing new,
-- lo is the anchor's index), and below are the entries below index lo; when the anchor is not
-- in the list (none given, trimmed away, or Redis lost its data), the oldest entries of the
-- whole list, its tail included."""
    + _SEQ
    + """local len = redis.call('LLEN', KEYS[1])
local context = #ARGV - 5
local idx = len
local found = 0
-- Whether the entries below index `at` are those that were below the anchor (as far as the
-- list still holds them: trimming removes them first).
local function fits(at)
  if context <= 0 then return true end
  local below = redis.call('LRANGE', KEYS[1], at + 1, at + context)
  for i = 1, #below do
    if below[i] ~= ARGV[5 + i] then return false end
  end
  return true
end
if ARGV[1] == '1' then
  -- Each push since moved the anchor one place from the head, and each entry trimmed since
  -- shortened the list by one: the anchor is `bound` from the head, or further if entries
  -- were trimmed meanwhile.
  local bound = 0
  if ARGV[4] ~= '' then bound = math.max(len + tonumber(ARGV[4]), 0) end
  local pos = false
  if ARGV[4] ~= '' and bound < len and redis.call('LINDEX', KEYS[1], bound) == ARGV[2]
      and fits(bound) then
    pos = bound
  else
    local first = redis.call('LPOS', KEYS[1], ARGV[2])
    if first and first >= bound and fits(first) then
      pos = first
    elseif first then
      -- Copies of the anchor's bytes (entries with no LogID of their own, say): the anchor is
      -- the newest copy at or below the bound whose older neighbours are the anchor's.
      for _, at in ipairs(redis.call('LPOS', KEYS[1], ARGV[2], 'COUNT', 0)) do
        if at >= bound and fits(at) then pos = at; break end
      end
    end
  end
  if pos then idx = pos; found = 1 end
end
local lo = math.max(idx - tonumber(ARGV[3]), 0)
local entries = {}
if idx > 0 then entries = redis.call('LRANGE', KEYS[1], lo, idx - 1) end
local below = redis.call('LRANGE', KEYS[1], lo + 1, lo + tonumber(ARGV[5]))
return {seq, found, entries, len, lo, below}
"""
)
"""Read only what was pushed since the anchor entry, oldest first in chunks, with the counter.

LPUSH only ever adds above the anchor and LTRIM only removes below it, so the entries above the
anchor are exactly the new ones, whichever writer pushed them and in whatever LogID order (a Go
writer's INCR and LPUSH are separate, so its entries can land out of LogID order). The anchor is
found by its bytes where the list's length says it should be (one LINDEX), else by LPOS, at one
comparison per new entry: the list is never re-read whole. An identical entry pushed since
(entries without a LogID of their own) is told from it by its place, and by the entries below
it, which are remembered with it (`ANCHOR_CONTEXT`): only a run of identical entries longer
than that, in a list trimmed between two reads, can still be taken for it."""


def tail_of(event: Event) -> bytes:
    """Return `event`'s Go wire JSON without its leading `{"LogID":<n>,` (the writer adds it)."""
    return event.to_json(log_id=False)


STREAM_RELEASE: Final = """
-- KEYS: stream. ARGV: group, consumer, idle ms, entry ids. Each entry still pending under this
-- consumer is claimed back to it with its delivery count one less, idle for `idle ms`; one a
-- peer claimed meanwhile is left alone (checked and claimed in one step). Returns how many.
local released = 0
for i = 4, #ARGV do
  local row = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
  if #row > 0 then
    local n = tonumber(row[1][4])
    if n > 0 then n = n - 1 end
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'IDLE', ARGV[3],
               'RETRYCOUNT', n, 'JUSTID')
    released = released + 1
  end
end
return released
"""
"""`release()` of a streams consumer: deliveries handed back uncounted, atomically per call."""


# Shared head of the consumer's scripts that read XINFO: `fields()` makes a flat reply
# (`name, value, ...`) a table, and `xinfo()` asks XINFO about the stream KEYS[1], giving
# nil and the error's text where it fails (`missing()` tells "no stream yet" from a refusal).
_XINFO: Final = """
local function fields(flat)
  local out = {}
  for i = 1, #flat, 2 do out[flat[i]] = flat[i + 1] end
  return out
end
local function xinfo(what)
  local ok, reply = pcall(redis.call, 'XINFO', what, KEYS[1])
  if ok then return reply end
  return nil, type(reply) == 'table' and tostring(reply['err']) or tostring(reply)
end
local function missing(failure)
  return string.find(failure, 'no such key', 1, true) ~= nil
end
"""

STREAM_COUNT_UNREAD_TRIMMED: Final = (
    _XINFO
    + """
-- KEYS: stream. ARGV: group. Counts the entries MAXLEN trimmed before the group was handed
-- them, moves the group's read counter past them, and returns how many (0: none, or none that
-- can be told). Sent with each read of new entries (the XREADGROUP itself stays outside: a
-- script would turn every entry of a batch into Lua strings and back, 8 times the work).
--
-- Redis 7 keeps a group's `entries-read`: the position, among all entries ever added, of the
-- last one handed to the group. It adds one per entry handed out, so entries trimmed unread
-- are never passed in it. When the group has been handed the newest entry, every entry ever
-- added is behind it; when its last-delivered id is older than the stream's first entry, every
-- entry trimmed so far is: the difference is what the group never got. The counter is set past
-- them (XGROUP SETID ... ENTRIESREAD) in the same step, so each is counted once, whichever
-- consumer of the group comes next. Nothing is counted without the counter (Redis 6; a group
-- created elsewhere and never read), nor on a stream that ever had an entry deleted (XDEL
-- leaves `max-deleted-entry-id`; trimming does not): those are no trims, and cannot be told
-- apart from them.
local groups, failure = xinfo('GROUPS')
if not groups then
  -- No stream yet: nothing to count. Anything else (an ACL refusing XINFO) is said.
  if missing(failure) then return 0 end
  return redis.error_reply(failure)
end
local row = nil
for _, g in ipairs(groups) do
  local group = fields(g)
  if group['name'] == ARGV[1] then row = group end
end
if not row or not row['entries-read'] or row['lag'] == 0 then return 0 end
local last = row['last-delivered-id']
if row['entries-read'] == 0 and last ~= '0-0' then
  -- A group that was handed entries cannot have read none: its counter was lost (Redis 7.0
  -- loads it from its append-only file as 0), and every entry ever added would be counted as
  -- trimmed (trial 195). Set it unknown, which Redis makes exact again once the group reads
  -- the newest entry; nothing is counted until then.
  redis.call('XGROUP', 'SETID', KEYS[1], ARGV[1], last)
  return 0
end
local stream = fields(redis.call('XINFO', 'STREAM', KEYS[1]))
local added, length = stream['entries-added'], stream['length']
if not added or stream['max-deleted-entry-id'] ~= '0-0' then return 0 end
local function older(a, b)
  local ams, aseq = string.match(a, '^(%d+)-(%d+)$')
  local bms, bseq = string.match(b, '^(%d+)-(%d+)$')
  ams, aseq, bms, bseq = tonumber(ams), tonumber(aseq), tonumber(bms), tonumber(bseq)
  return ams < bms or (ams == bms and aseq < bseq)
end
local passed = nil
if not older(last, stream['last-generated-id']) then
  passed = added
elseif length > 0 and stream['first-entry'] and older(last, stream['first-entry'][1]) then
  passed = added - length
end
if not passed or passed <= row['entries-read'] then return 0 end
redis.call('XGROUP', 'SETID', KEYS[1], ARGV[1], last, 'ENTRIESREAD', passed)
return passed - row['entries-read']
"""
)
"""Counts a consumer group's entries trimmed before it read them (see the script's comment)."""

STREAM_RECLAIM: Final = """
-- KEYS: stream. ARGV: group, consumer, min idle ms, start ('0-0', or '(<id>' to go on after
-- an id), count. Claims for the consumer up to `count` pending entries idle at least `min idle`
-- ms (a dead consumer's): XPENDING ... IDLE, then XCLAIM of those the stream still holds. Those
-- it no longer holds (trimmed, or deleted) are acknowledged and counted: their content is gone.
-- Not XAUTOCLAIM: it drops every pending entry the stream no longer holds, however recently it
-- was read, so a live consumer's (which it processes) and a consumer's just killed (which it
-- never will) could not be told apart, nor the second counted (trials 168, 171).
-- Returns {next start ('0-0': the end was reached), claimed entries, entries gone}.
local rows = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[3], ARGV[4], '+', ARGV[5])
local held, gone = {}, {}
for _, row in ipairs(rows) do
  if #redis.call('XRANGE', KEYS[1], row[1], row[1]) > 0 then
    held[#held + 1] = row[1]
  else
    gone[#gone + 1] = row[1]
  end
end
if #gone > 0 then redis.call('XACK', KEYS[1], ARGV[1], unpack(gone)) end
local claimed = {}
if #held > 0 then
  claimed = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], unpack(held))
end
local next = '0-0'
if #rows >= tonumber(ARGV[5]) then next = '(' .. rows[#rows][1] end
return {next, claimed, #gone}
"""
"""A streams consumer's reclaim of a dead consumer's entries (see the script's comment)."""


STREAM_CREATE_GROUP: Final = (
    _XINFO
    + """
-- KEYS: stream. ARGV: group. Creates the group at the stream's start ("0", and the stream if
-- there is none), with its read counter (Redis 7's entries-read) at the entries trimmed
-- before it existed: they are not the group's losses, and what is trimmed from now on before
-- the group reads it is (see STREAM_COUNT_UNREAD_TRIMMED). Without a counter to set (Redis 6),
-- plainly.
local passed = nil
local info, failure = xinfo('STREAM')
if info then
  local stream = fields(info)
  if stream['entries-added'] then passed = stream['entries-added'] - stream['length'] end
elseif missing(failure) then
  passed = 0
else
  return redis.error_reply(failure)
end
if passed then
  local created = redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM',
                              'ENTRIESREAD', passed)
  if type(created) ~= 'table' or not created['err'] or
      string.find(tostring(created['err']), 'BUSYGROUP', 1, true) then
    return created
  end
end
return redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
"""
)
"""A streams consumer's group, created with its read counter past the entries trimmed before."""
