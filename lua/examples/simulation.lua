-- The original's simulation demo: a three-node HA cluster on the embedded sim, in this
-- one LuaJIT process. A leader is elected, keys are placed on the ring, the leader
-- crashes and another takes over, then everyone leaves.
--   CONSUL_HA_LIB=target/debug/libconsul_ha.so LUA_PATH='lua/?.lua;;' luajit lua/examples/simulation.lua

local ffi = require("ffi")
local consul_ha = require("consul_ha")

ffi.cdef("int poll(void *fds, unsigned long nfds, int timeout);")
local function sleep(s) ffi.C.poll(nil, 0, math.floor(s * 1000)) end

local function leader(nodes)
    for _, n in pairs(nodes) do
        if n and n:is_leader() then return n end
    end
end

local function wait_leader(nodes, not_id, limit)
    for _ = 1, limit * 10 do
        local l = leader(nodes)
        if l and l.node_id ~= not_id then return l end
        sleep(0.1)
    end
    error("no leader within " .. limit .. " s")
end

-- A plain client on the same embedded store.
local client = assert(consul_ha.ConsulClient:new({ simulate = true }))
assert(client:kv_put("demo/config", "replicas=3"))
print("config:", client:kv_get("demo/config"))

local nodes = {}
for i = 1, 3 do
    local node = assert(consul_ha.ConsulHACluster:new({
        simulate = true,
        service = "demo",
        node_id = "node-" .. i,
        node_address = "10.0.0." .. i .. ":7000",
        heartbeat_interval = 0.5,
        session_ttl = 2,
        lock_delay = 1,
    }))
    assert(node:start())
    nodes[i] = node
    print("started node-" .. i)
end

local l = wait_leader(nodes, nil, 10)
local info = l:get_leader_info()
print(("leader: %s at %s (fencing token %d)"):format(info.node_id, info.address, info.fencing_token))

sleep(1)
for _, key in ipairs({ "user:1", "user:2", "order:42", "cart:7" }) do
    local owner = nodes[1]:get_node_for_key(key)
    print(("  %-9s -> %s"):format(key, owner and owner.id or "(no members yet)"))
end
for _, n in ipairs(nodes[1]:get_nodes()) do
    print(("member %s %s %s"):format(n.id, n.address, n.health))
end

print("crashing the leader " .. info.node_id)
for i, n in ipairs(nodes) do
    if n == l then
        n:destroy()
        nodes[i] = false
    end
end
local t0 = os.clock()
local next_leader = wait_leader(nodes, info.node_id, 15)
local next_info = next_leader:get_leader_info()
print(("new leader: %s (fencing token %d > %d)"):format(
    next_info.node_id, next_info.fencing_token, info.fencing_token))
assert(next_info.fencing_token > info.fencing_token)
local _ = t0

for _, n in pairs(nodes) do
    if n then assert(n:stop()); n:destroy() end
end
client:close()
consul_ha.shutdown()
print("simulation done")
