-- wrk script for POST /api/messages/sms (see bench/README.md).
--
-- Every request is a distinct message: the body carries a run nonce, the wrk thread id
-- and a per-thread counter, so the derived idempotency key never repeats and the server
-- has to store every accepted request (no duplicate short-cut flatters the numbers).
-- Senders/recipients come from small pools so conversations are shared, as in real
-- traffic: the conversation upsert and its counter update see contention.
--
-- Env (read by every wrk thread): BENCH_NONCE (run id), BENCH_SENDERS (default 10
-- business numbers), BENCH_CONTACTS (default 1000 contact numbers), BENCH_API_KEY (sent
-- as Authorization: Bearer; unset or empty = no key), and at most one of:
--   BENCH_RATE   offered requests/s in all (unset or 0 = as fast as the server answers),
--                spread over BENCH_THREADS (default 2) wrk threads;
--   BENCH_QUOTA  accepted (2xx) requests in all: each thread stops once it has its share
--                accepted, and sends no request beyond it (the caller then ends wrk).

local threads = {}
local next_id = 1

-- Main Lua state: give each thread its id and keep the handle to read its counters in done().
function setup(thread)
   thread:set("id", next_id)
   next_id = next_id + 1
   table.insert(threads, thread)
end

-- Thread Lua states from here on.
local nonce = os.getenv("BENCH_NONCE") or tostring(os.time())
local senders = tonumber(os.getenv("BENCH_SENDERS") or "10")
local contacts = tonumber(os.getenv("BENCH_CONTACTS") or "1000")
local nthreads = tonumber(os.getenv("BENCH_THREADS") or "2")
local counter = 0
non2xx = 0          -- globals, so that done() can read them with thread:get()
statuses = {}       -- status code (string) -> count, only for status >= 300

local headers = { ["Content-Type"] = "application/json" }
local api_key = os.getenv("BENCH_API_KEY") or ""
if api_key ~= "" then
   headers["Authorization"] = "Bearer " .. api_key
end
-- ~120 characters of filler: a typical SMS length, not a toy 2-byte payload.
local filler = "Hi! Your order has shipped and will arrive on Tuesday. Reply STOP to opt out, HELP for help."

function init(args)
   -- Deterministic per-thread sequence: the same pairs are drawn on every run.
   math.randomseed(1000 + id)
end

-- Fixed offered rate: each thread sends on an absolute schedule (one request every
-- nthreads/rate seconds) on whichever connection is free, so the offered rate is the one
-- asked for whatever the response time, as long as a connection is free. wrk times the
-- request only, not the wait before it. wrk's timers take whole milliseconds: a request
-- may leave up to 1 ms early, but the schedule is absolute, so the error does not add up.
local rate = tonumber(os.getenv("BENCH_RATE") or "") or 0
local quota_all = tonumber(os.getenv("BENCH_QUOTA") or "") or 0
local ok_ffi, ffi = pcall(require, "ffi")
local now_ms
if ok_ffi then
   ffi.cdef [[
      typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
      int clock_gettime(int clk_id, bench_timespec *tp);
   ]]
   local ts = ffi.new("bench_timespec")
   now_ms = function()
      ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
      return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
   end
end

local quota, posts, accepted = 0, 0, 0 -- quota mode: this thread's share, POSTs sent, 2xx seen

if quota_all > 0 then
   -- Quota mode: park a connection (for far longer than any run) once this thread's share
   -- is in flight; a refused POST frees its slot, so exactly `quota` end up accepted.
   function delay()
      if quota == 0 then
         quota = math.floor(quota_all / nthreads) + ((id <= quota_all % nthreads) and 1 or 0)
      end
      if posts >= quota then
         return 3600000
      end
      posts = posts + 1
      return 0
   end
elseif rate > 0 and now_ms then
   local interval = nthreads * 1000 / rate
   local next_at
   function delay()
      local now = now_ms()
      next_at = next_at or now
      local wait = next_at - now
      next_at = next_at + interval
      if wait <= 0 then
         return 0
      end
      return math.floor(wait)
   end
elseif rate > 0 then
   -- No LuaJIT ffi (no clock): a fixed pause per connection, dithered to whole
   -- milliseconds. Offers a little less than asked (the response time adds to the pause).
   local pause = tonumber(os.getenv("BENCH_CONNECTIONS") or "64") * 1000 / rate
   local carry = 0
   function delay()
      local d = pause + carry
      local whole = math.floor(d)
      carry = d - whole
      return whole
   end
end

function request()
   counter = counter + 1
   local from = string.format("+1201555%04d", math.random(0, senders - 1))
   local to = string.format("+1804555%04d", math.random(0, contacts - 1))
   local body = string.format('{"from":"%s","to":"%s","type":"sms","body":"bench %s t%d #%d %s","timestamp":"2024-11-01T14:00:00Z"}',
      from, to, nonce, id, counter, filler)
   return wrk.format("POST", nil, headers, body)
end

function response(status, hdrs, body)
   if status >= 300 then
      non2xx = non2xx + 1
      local k = tostring(status)
      statuses[k] = (statuses[k] or 0) + 1
      if quota > 0 then
         posts = posts - 1 -- refused: its slot goes to another message
      end
   elseif quota > 0 then
      accepted = accepted + 1
      if accepted >= quota then
         wrk.thread:stop()
      end
   end
end

-- Main state again: print one machine-readable line that bench/report.py parses
-- (latency in microseconds, straight from wrk's histogram).
function done(summary, latency, requests)
   local bad, by_status = 0, {}
   for _, t in ipairs(threads) do
      bad = bad + (t:get("non2xx") or 0)
      for k, v in pairs(t:get("statuses") or {}) do
         by_status[k] = (by_status[k] or 0) + v
      end
   end
   local parts = {}
   for k, v in pairs(by_status) do table.insert(parts, k .. ":" .. v) end
   table.sort(parts)
   local e = summary.errors
   io.write(string.format(
      "BENCH requests=%d duration_us=%d bytes=%d p50_us=%d p75_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d " ..
      "non2xx=%d statuses=%s err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d clock=%s\n",
      summary.requests, summary.duration, summary.bytes,
      latency:percentile(50), latency:percentile(75), latency:percentile(90), latency:percentile(99),
      latency:percentile(99.9), latency.max,
      bad, (#parts > 0 and table.concat(parts, ",") or "-"),
      e.connect, e.read, e.write, e.status, e.timeout, (now_ms and "ffi" or "none")))
   io.write(string.format("non-2xx responses (status >= 300): %d %s\n", bad,
      (#parts > 0 and "(" .. table.concat(parts, ", ") .. ")" or "")))
end
