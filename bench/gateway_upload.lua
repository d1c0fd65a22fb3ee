-- wrk script for bench/bench_gateway.py: POST /upload_health_data, one reading per upload.
-- Every request is a new (device, timestamp) pair, so each 200 becomes one DB row and the
-- devices spread over the partitions like a real fleet. Env: WRK_DEVICES, WRK_SN_PREFIX.
local devices = tonumber(os.getenv("WRK_DEVICES") or "2000")
local prefix = os.getenv("WRK_SN_PREFIX") or "WRK"
local token_header = os.getenv("WRK_TOKEN_HEADER")
local token = os.getenv("WRK_TOKEN")
local counter = 0
local threads = 0
local statuses = {}

-- runs in the main Lua state: gives each thread's own state a distinct global `tid`
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end

function init(args)
  counter = 0
  statuses = {}
  wrk.headers["Content-Type"] = "application/json"
  if token_header and token then
    wrk.headers[token_header] = token
  end
end

function request()
  counter = counter + 1
  local thread_id = tid or 0
  local device = (counter * 7919 + thread_id) % devices
  -- one second per request and device: unique timestamps for hours of load
  local t = 1748736000 + thread_id * 50000000 + counter
  local body = string.format(
    '{"data":{"deviceSn":"%s%02d%06d","heart_rate":%d,"blood_oxygen":98,'
    .. '"body_temperature":"36.5","step":%d,"distance":"0.0","calorie":"0.0",'
    .. '"latitude":"22.543096","longitude":"114.057865","altitude":"0","stress":30,'
    .. '"upload_method":"wifi","blood_pressure_systolic":115,"blood_pressure_diastolic":75,'
    .. '"timestamp":"%s"}}',
    prefix, thread_id, device, 60 + counter % 30, counter, os.date("!%Y-%m-%d %H:%M:%S", t))
  return wrk.format("POST", "/upload_health_data", nil, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  io.write(string.format("WRK_JSON {\"requests\":%d,\"seconds\":%.3f,\"errors_connect\":%d,"
    .. "\"errors_read\":%d,\"errors_write\":%d,\"errors_status\":%d,\"errors_timeout\":%d,"
    .. "\"p50_ms\":%.2f,\"p95_ms\":%.2f,\"p99_ms\":%.2f}\n",
    summary.requests, summary.duration / 1e6, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.status, summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency:percentile(99) / 1000))
end
