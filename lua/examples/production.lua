-- The original's production example: a node of a sharded service with the production
-- manager (shards, replicas, routing, health) against a Consul agent: a real one, or
--   consul-ha agent -dev --http-addr 127.0.0.1:8500
-- Run:
--   CONSUL_URL=http://127.0.0.1:8500 CONSUL_HA_LIB=target/debug/libconsul_ha.so \
--     LUA_PATH='lua/?.lua;;' luajit lua/examples/production.lua

local ffi = require("ffi")
local consul_ha = require("consul_ha")

ffi.cdef("int poll(void *fds, unsigned long nfds, int timeout);")
local function sleep(s) ffi.C.poll(nil, 0, math.floor(s * 1000)) end

local url = os.getenv("CONSUL_URL") or "http://127.0.0.1:8500"
local node_id = os.getenv("NODE_ID") or "prod-1"

local manager, err = consul_ha.ProductionManager:new({
    consul_url = url,
    service = "orders",
    node_id = node_id,
    node_address = "127.0.0.1:7001",
    heartbeat_interval = 1,
    -- Consul's own minimum session TTL (10 s) and the default lock-delay.
    session_ttl = 10,
    lock_delay = 5,
    shards = 16,
    replicas = 1,
    copy_time = 0.5,
    timeout = 10,
})
if not manager then error("cannot configure: " .. err) end
local ok
ok, err = manager:start()
if not ok then error("cannot start against " .. url .. ": " .. err) end
print("joined " .. url .. " as " .. node_id)

local route
for _ = 1, 100 do
    route = manager:route("order:42")
    if route then break end
    sleep(0.1)
end
assert(route, "no routing table within 10 s")
print(("order:42 -> shard %d, primary %s, table version %d"):format(
    route.shard, tostring(route.primary), route.version))

local leader = manager:get_leader_info()
print("leader: " .. (leader and leader.node_id or "none yet"), "this node leads:", manager:is_leader())

local health
for _ = 1, 100 do
    health = manager:health()
    if health and health.healthy == #health.shards then break end
    sleep(0.1)
end
print(("health: %d healthy, %d under-replicated, %d unavailable of %d shards"):format(
    health.healthy, health.under_replicated, health.unavailable, #health.shards))
assert(health.healthy == #health.shards, "not every shard healthy")

-- The plain client on the same agent.
local client = assert(consul_ha.ConsulClient:new({ consul_url = url }))
assert(client:kv_put("orders/last-run", tostring(os.time())))
local services = assert(client:discover_service("orders"))
print("instances of orders: " .. #services)

assert(manager:stop())
client:close()
consul_ha.shutdown()
print("production example done")
