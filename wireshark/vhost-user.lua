-- Wireshark dissector for vhost-user captures written by `vhost-user trace --pcapng`
-- (the vhost-user-client package). Link type USER0 (147); every packet is an
-- 8-byte prefix added by the tracing proxy, then one vhost-user message exactly as
-- it was on the wire (vhost-user.rst, 'Message Specification'):
--
--   0  u8   prefix version (1)
--   1  u8   bits: 0 = back-end channel (SET_BACKEND_REQ_FD socket),
--                 1 = sent by the back-end, 2 = connection-end record
--   2  u8   message: fds passed with it (SCM_RIGHTS); end record: who closed
--           (0 front-end, 1 back-end, 2 proxy)
--   3  u8   reserved
--   4  u32  connection number (little-endian)
--   8  ...  message: header (request u32, flags u32, size u32) + payload;
--           end record: UTF-8 text
--
-- Use:  tshark -X lua_script:wireshark/vhost-user.lua -r trace.pcapng -V
-- Name net (or blk) feature bits:  ... -o vhostuser.device:net
-- or copy this file to ~/.local/lib/wireshark/plugins/ for Wireshark.
-- Display filters: vhostuser.request_name == "SET_MEM_TABLE", vhostuser.fds > 0,
-- vhostuser.from_backend, vhostuser.vring.index == 1, vhostuser.close ...

-- BEGIN GENERATED TABLES (scripts/wireshark-tables.ts; do not edit)
-- vhost-user.rst, 'Front-end message types'
local frontend_requests = {
    [1] = "GET_FEATURES",
    [2] = "SET_FEATURES",
    [3] = "SET_OWNER",
    [4] = "RESET_OWNER",
    [5] = "SET_MEM_TABLE",
    [6] = "SET_LOG_BASE",
    [7] = "SET_LOG_FD",
    [8] = "SET_VRING_NUM",
    [9] = "SET_VRING_ADDR",
    [10] = "SET_VRING_BASE",
    [11] = "GET_VRING_BASE",
    [12] = "SET_VRING_KICK",
    [13] = "SET_VRING_CALL",
    [14] = "SET_VRING_ERR",
    [15] = "GET_PROTOCOL_FEATURES",
    [16] = "SET_PROTOCOL_FEATURES",
    [17] = "GET_QUEUE_NUM",
    [18] = "SET_VRING_ENABLE",
    [19] = "SEND_RARP",
    [20] = "NET_SET_MTU",
    [21] = "SET_BACKEND_REQ_FD",
    [22] = "IOTLB_MSG",
    [23] = "SET_VRING_ENDIAN",
    [24] = "GET_CONFIG",
    [25] = "SET_CONFIG",
    [26] = "CREATE_CRYPTO_SESSION",
    [27] = "CLOSE_CRYPTO_SESSION",
    [28] = "POSTCOPY_ADVISE",
    [29] = "POSTCOPY_LISTEN",
    [30] = "POSTCOPY_END",
    [31] = "GET_INFLIGHT_FD",
    [32] = "SET_INFLIGHT_FD",
    [33] = "GPU_SET_SOCKET",
    [34] = "RESET_DEVICE",
    [35] = "VRING_KICK",
    [36] = "GET_MAX_MEM_SLOTS",
    [37] = "ADD_MEM_REG",
    [38] = "REM_MEM_REG",
    [39] = "SET_STATUS",
    [40] = "GET_STATUS",
    [41] = "GET_SHARED_OBJECT",
    [42] = "SET_DEVICE_STATE_FD",
    [43] = "CHECK_DEVICE_STATE",
    [44] = "GET_SHMEM_CONFIG",
    [45] = "GET_VRING_BASE_SKIP_DRAIN",
}
-- vhost-user.rst, 'Back-end message types'
local backend_requests = {
    [1] = "IOTLB_MSG",
    [2] = "CONFIG_CHANGE_MSG",
    [3] = "VRING_HOST_NOTIFIER_MSG",
    [4] = "VRING_CALL",
    [5] = "VRING_ERR",
    [6] = "SHARED_OBJECT_ADD",
    [7] = "SHARED_OBJECT_REMOVE",
    [8] = "SHARED_OBJECT_LOOKUP",
    [9] = "SHMEM_MAP",
    [10] = "SHMEM_UNMAP",
}
-- vhost-user.rst, 'Protocol features' (bit numbers)
local protocol_features = {
    [0] = "MQ",
    [1] = "LOG_SHMFD",
    [2] = "RARP",
    [3] = "REPLY_ACK",
    [4] = "MTU",
    [5] = "BACKEND_REQ",
    [6] = "CROSS_ENDIAN",
    [7] = "CRYPTO_SESSION",
    [8] = "PAGEFAULT",
    [9] = "CONFIG",
    [10] = "BACKEND_SEND_FD",
    [11] = "HOST_NOTIFIER",
    [12] = "INFLIGHT_SHMFD",
    [13] = "RESET_DEVICE",
    [14] = "INBAND_NOTIFICATIONS",
    [15] = "CONFIGURE_MEM_SLOTS",
    [16] = "STATUS",
    [17] = "XEN_MMAP",
    [18] = "SHARED_OBJECT",
    [19] = "DEVICE_STATE",
    [20] = "GET_VRING_BASE_INFLIGHT",
    [21] = "GPA_ADDRESSES",
    [22] = "SHMEM",
    [23] = "GET_VRING_BASE_SKIP_DRAIN",
}
-- virtio 1.3, 'Reserved Feature Bits', and VHOST_F_LOG_ALL / VHOST_USER_F_PROTOCOL_FEATURES (bit numbers)
local virtio_features = {
    [24] = "VIRTIO_F_NOTIFY_ON_EMPTY",
    [26] = "VHOST_F_LOG_ALL",
    [27] = "VIRTIO_F_ANY_LAYOUT",
    [28] = "VIRTIO_RING_F_INDIRECT_DESC",
    [29] = "VIRTIO_RING_F_EVENT_IDX",
    [30] = "VHOST_USER_F_PROTOCOL_FEATURES",
    [32] = "VIRTIO_F_VERSION_1",
    [33] = "VIRTIO_F_ACCESS_PLATFORM",
    [34] = "VIRTIO_F_RING_PACKED",
    [35] = "VIRTIO_F_IN_ORDER",
    [36] = "VIRTIO_F_ORDER_PLATFORM",
    [37] = "VIRTIO_F_SR_IOV",
    [38] = "VIRTIO_F_NOTIFICATION_DATA",
    [39] = "VIRTIO_F_NOTIF_CONFIG_DATA",
    [40] = "VIRTIO_F_RING_RESET",
    [41] = "VIRTIO_F_ADMIN_VQ",
}
-- virtio 1.3, 'Network Device: Feature bits' (bit numbers; shown with the device preference set to net)
local net_features = {
    [0] = "VIRTIO_NET_F_CSUM",
    [1] = "VIRTIO_NET_F_GUEST_CSUM",
    [2] = "VIRTIO_NET_F_CTRL_GUEST_OFFLOADS",
    [3] = "VIRTIO_NET_F_MTU",
    [5] = "VIRTIO_NET_F_MAC",
    [6] = "VIRTIO_NET_F_GSO",
    [7] = "VIRTIO_NET_F_GUEST_TSO4",
    [8] = "VIRTIO_NET_F_GUEST_TSO6",
    [9] = "VIRTIO_NET_F_GUEST_ECN",
    [10] = "VIRTIO_NET_F_GUEST_UFO",
    [11] = "VIRTIO_NET_F_HOST_TSO4",
    [12] = "VIRTIO_NET_F_HOST_TSO6",
    [13] = "VIRTIO_NET_F_HOST_ECN",
    [14] = "VIRTIO_NET_F_HOST_UFO",
    [15] = "VIRTIO_NET_F_MRG_RXBUF",
    [16] = "VIRTIO_NET_F_STATUS",
    [17] = "VIRTIO_NET_F_CTRL_VQ",
    [18] = "VIRTIO_NET_F_CTRL_RX",
    [19] = "VIRTIO_NET_F_CTRL_VLAN",
    [20] = "VIRTIO_NET_F_CTRL_RX_EXTRA",
    [21] = "VIRTIO_NET_F_GUEST_ANNOUNCE",
    [22] = "VIRTIO_NET_F_MQ",
    [23] = "VIRTIO_NET_F_CTRL_MAC_ADDR",
    [50] = "VIRTIO_NET_F_DEVICE_STATS",
    [52] = "VIRTIO_NET_F_VQ_NOTF_COAL",
    [53] = "VIRTIO_NET_F_NOTF_COAL",
    [54] = "VIRTIO_NET_F_GUEST_USO4",
    [55] = "VIRTIO_NET_F_GUEST_USO6",
    [56] = "VIRTIO_NET_F_HOST_USO",
    [57] = "VIRTIO_NET_F_HASH_REPORT",
    [59] = "VIRTIO_NET_F_GUEST_HDRLEN",
    [60] = "VIRTIO_NET_F_RSS",
    [61] = "VIRTIO_NET_F_RSC_EXT",
    [62] = "VIRTIO_NET_F_STANDBY",
    [63] = "VIRTIO_NET_F_SPEED_DUPLEX",
}
-- virtio 1.3, 'Block Device: Feature bits' (bit numbers; shown with the device preference set to blk)
local blk_features = {
    [1] = "VIRTIO_BLK_F_SIZE_MAX",
    [2] = "VIRTIO_BLK_F_SEG_MAX",
    [4] = "VIRTIO_BLK_F_GEOMETRY",
    [5] = "VIRTIO_BLK_F_RO",
    [6] = "VIRTIO_BLK_F_BLK_SIZE",
    [9] = "VIRTIO_BLK_F_FLUSH",
    [10] = "VIRTIO_BLK_F_TOPOLOGY",
    [11] = "VIRTIO_BLK_F_CONFIG_WCE",
    [12] = "VIRTIO_BLK_F_MQ",
    [13] = "VIRTIO_BLK_F_DISCARD",
    [14] = "VIRTIO_BLK_F_WRITE_ZEROES",
    [15] = "VIRTIO_BLK_F_LIFETIME",
    [16] = "VIRTIO_BLK_F_SECURE_ERASE",
    [17] = "VIRTIO_BLK_F_ZONED",
}
-- virtio 1.2 §2.1, device status bits (values)
local device_status = {
    [1] = "ACKNOWLEDGE",
    [2] = "DRIVER",
    [4] = "DRIVER_OK",
    [8] = "FEATURES_OK",
    [64] = "DEVICE_NEEDS_RESET",
    [128] = "FAILED",
}
-- END GENERATED TABLES

local band = (bit32 and bit32.band) or bit.band

local proto = Proto("vhostuser", "vhost-user")

local closers = { [0] = "front-end", [1] = "back-end", [2] = "proxy" }

local f = {
    version      = ProtoField.uint8("vhostuser.trace.version", "Trace prefix version", base.DEC),
    backend_chan = ProtoField.bool("vhostuser.backend_channel", "Back-end channel", 8, nil, 0x01),
    from_backend = ProtoField.bool("vhostuser.from_backend", "Sent by the back-end", 8, nil, 0x02),
    is_close     = ProtoField.bool("vhostuser.close", "Connection end", 8, nil, 0x04),
    fds          = ProtoField.uint8("vhostuser.fds", "File descriptors (SCM_RIGHTS)", base.DEC),
    closed_by    = ProtoField.uint8("vhostuser.closed_by", "Closed by", base.DEC, closers),
    connection   = ProtoField.uint32("vhostuser.connection", "Connection", base.DEC),
    close_text   = ProtoField.string("vhostuser.close_text", "Connection end"),

    request      = ProtoField.uint32("vhostuser.request", "Request", base.DEC),
    request_name = ProtoField.string("vhostuser.request_name", "Request name"),
    flags        = ProtoField.uint32("vhostuser.flags", "Flags", base.HEX),
    flag_version = ProtoField.uint32("vhostuser.flags.version", "Version", base.DEC, nil, 0x3),
    flag_reply   = ProtoField.bool("vhostuser.flags.reply", "REPLY", 32, nil, 0x4),
    flag_need    = ProtoField.bool("vhostuser.flags.need_reply", "NEED_REPLY", 32, nil, 0x8),
    size         = ProtoField.uint32("vhostuser.size", "Size", base.DEC),
    payload      = ProtoField.bytes("vhostuser.payload", "Payload"),

    u64          = ProtoField.uint64("vhostuser.u64", "u64", base.DEC),
    ack          = ProtoField.uint64("vhostuser.ack", "Ack (0 = success)", base.DEC),
    features     = ProtoField.uint64("vhostuser.features", "Features", base.HEX),
    pfeatures    = ProtoField.uint64("vhostuser.protocol_features", "Protocol features", base.HEX),
    feature_bit  = ProtoField.string("vhostuser.feature", "Feature"),
    status       = ProtoField.uint64("vhostuser.status", "Device status", base.HEX),

    vring_index  = ProtoField.uint32("vhostuser.vring.index", "Vring index", base.DEC),
    vring_num    = ProtoField.uint32("vhostuser.vring.num", "Num", base.DEC),
    vring_nofd   = ProtoField.bool("vhostuser.vring.nofd", "NOFD (no fd: polling)"),
    vring_flags  = ProtoField.uint32("vhostuser.vring.flags", "Flags (bit 0: VHOST_VRING_F_LOG)", base.HEX),
    vring_desc   = ProtoField.uint64("vhostuser.vring.desc_user_addr", "Descriptor table address", base.HEX),
    vring_used   = ProtoField.uint64("vhostuser.vring.used_user_addr", "Used ring address", base.HEX),
    vring_avail  = ProtoField.uint64("vhostuser.vring.avail_user_addr", "Available ring address", base.HEX),
    vring_log    = ProtoField.uint64("vhostuser.vring.log_guest_addr", "Log guest address", base.HEX),

    mem_nregions = ProtoField.uint32("vhostuser.mem.nregions", "Regions", base.DEC),
    mem_padding  = ProtoField.uint32("vhostuser.mem.padding", "Padding", base.HEX),
    region_gpa   = ProtoField.uint64("vhostuser.mem.guest_phys_addr", "Guest physical address", base.HEX),
    region_size  = ProtoField.uint64("vhostuser.mem.memory_size", "Size", base.HEX),
    region_uaddr = ProtoField.uint64("vhostuser.mem.userspace_addr", "User address", base.HEX),
    region_off   = ProtoField.uint64("vhostuser.mem.mmap_offset", "mmap offset", base.HEX),

    log_size     = ProtoField.uint64("vhostuser.log.mmap_size", "Log size", base.HEX),
    log_offset   = ProtoField.uint64("vhostuser.log.mmap_offset", "Log offset", base.HEX),

    cfg_offset   = ProtoField.uint32("vhostuser.config.offset", "Config offset", base.DEC),
    cfg_size     = ProtoField.uint32("vhostuser.config.size", "Config size", base.DEC),
    cfg_flags    = ProtoField.uint32("vhostuser.config.flags", "Config flags", base.DEC,
                                     { [0] = "WRITABLE", [1] = "LIVE_MIGRATION" }),
    cfg_data     = ProtoField.bytes("vhostuser.config.data", "Config space"),

    infl_size    = ProtoField.uint64("vhostuser.inflight.mmap_size", "Inflight area size", base.HEX),
    infl_offset  = ProtoField.uint64("vhostuser.inflight.mmap_offset", "Inflight area offset", base.HEX),
    infl_queues  = ProtoField.uint16("vhostuser.inflight.num_queues", "Queues", base.DEC),
    infl_qsize   = ProtoField.uint16("vhostuser.inflight.queue_size", "Queue size", base.DEC),

    iotlb_iova   = ProtoField.uint64("vhostuser.iotlb.iova", "IOVA", base.HEX),
    iotlb_size   = ProtoField.uint64("vhostuser.iotlb.size", "Size", base.HEX),
    iotlb_uaddr  = ProtoField.uint64("vhostuser.iotlb.uaddr", "User address", base.HEX),
    iotlb_perm   = ProtoField.uint8("vhostuser.iotlb.perm", "Permissions", base.DEC,
                                    { [0] = "NONE", [1] = "READ", [2] = "WRITE", [3] = "READ_WRITE" }),
    iotlb_type   = ProtoField.uint8("vhostuser.iotlb.type", "Type", base.DEC,
                                    { [1] = "MISS", [2] = "UPDATE", [3] = "INVALIDATE", [4] = "ACCESS_FAIL" }),

    area_size    = ProtoField.uint64("vhostuser.area.size", "Area size", base.HEX),
    area_offset  = ProtoField.uint64("vhostuser.area.offset", "Area offset", base.HEX),
    uuid         = ProtoField.guid("vhostuser.shared.uuid", "UUID"),
}
proto.fields = f

local ef_truncated = ProtoExpert.new("vhostuser.truncated", "Payload shorter than the header's size",
                                     expert.group.MALFORMED, expert.severity.ERROR)
local ef_unknown = ProtoExpert.new("vhostuser.unknown", "Request code the protocol does not define",
                                   expert.group.UNDECODED, expert.severity.WARN)
local ef_nack = ProtoExpert.new("vhostuser.nack", "Non-zero ack: the back-end reports a failure",
                                expert.group.RESPONSE_CODE, expert.severity.WARN)
proto.experts = { ef_truncated, ef_unknown, ef_nack }

-- Which device's feature bits to name (bits 0-23 and 50-63 mean different things per device).
proto.prefs.device = Pref.enum("Device type", 0, "Names the device-specific feature bits",
    { { 1, "unknown (BIT_n)", 0 }, { 2, "net", 1 }, { 3, "blk", 2 } }, false)

-- Front-end request codes by name, for the decoders below.
local R = {}
for code, name in pairs(frontend_requests) do R[name] = code end
local B = {}
for code, name in pairs(backend_requests) do B[name] = code end

local function hex64(tvb)
    return "0x" .. tvb:le_uint64():tohex()
end

-- Names of the bits set in a u64 at tvb (8 bytes), from `names` (bit number -> name).
local function bit_names(tvb, names)
    local out = {}
    local lo, hi = tvb(0, 4):le_uint(), tvb(4, 4):le_uint()
    for i = 0, 63 do
        local word, b = lo, i
        if i >= 32 then word, b = hi, i - 32 end
        if band(word, 2 ^ b) ~= 0 then out[#out + 1] = names[i] or ("BIT_" .. i) end
    end
    return out
end

local function add_features(tree, field, tvb, names)
    local item = tree:add_le(field, tvb)
    for _, name in ipairs(bit_names(tvb, names)) do item:add(f.feature_bit, tvb, name) end
    return hex64(tvb)
end

local function vring_state(tree, tvb)
    tree:add_le(f.vring_index, tvb(0, 4))
    tree:add_le(f.vring_num, tvb(4, 4))
    return string.format("{index: %d, num: %d}", tvb(0, 4):le_uint(), tvb(4, 4):le_uint())
end

local function vring_fd_index(tree, tvb)
    local v = tvb(0, 4):le_uint()
    tree:add_le(f.vring_index, tvb(0, 4), band(v, 0xff))
    tree:add(f.vring_nofd, tvb(1, 1), band(v, 0x100) ~= 0)
    if band(v, 0x100) ~= 0 then return string.format("{index: %d, nofd}", band(v, 0xff)) end
    return string.format("{index: %d}", band(v, 0xff))
end

local function vring_addr(tree, tvb)
    tree:add_le(f.vring_index, tvb(0, 4))
    tree:add_le(f.vring_flags, tvb(4, 4))
    tree:add_le(f.vring_desc, tvb(8, 8))
    tree:add_le(f.vring_used, tvb(16, 8))
    tree:add_le(f.vring_avail, tvb(24, 8))
    tree:add_le(f.vring_log, tvb(32, 8))
    return string.format("{index: %d, flags: %d, desc: %s}", tvb(0, 4):le_uint(), tvb(4, 4):le_uint(), hex64(tvb(8, 8)))
end

local function region(tree, tvb, label)
    local sub = tree:add(proto, tvb, label)
    sub:add_le(f.region_gpa, tvb(0, 8))
    sub:add_le(f.region_size, tvb(8, 8))
    sub:add_le(f.region_uaddr, tvb(16, 8))
    sub:add_le(f.region_off, tvb(24, 8))
    sub:append_text(string.format(": gpa %s size %s", hex64(tvb(0, 8)), hex64(tvb(8, 8))))
end

local function memory_table(tree, tvb)
    local n = tvb(0, 4):le_uint()
    tree:add_le(f.mem_nregions, tvb(0, 4))
    tree:add_le(f.mem_padding, tvb(4, 4))
    for i = 0, n - 1 do
        if 8 + 32 * (i + 1) > tvb:len() then break end
        region(tree, tvb(8 + 32 * i, 32), "Region " .. i)
    end
    return string.format("{regions: %d}", n)
end

local function single_region(tree, tvb)
    region(tree, tvb(8, 32), "Region")
    return string.format("{gpa: %s, size: %s}", hex64(tvb(8, 8)), hex64(tvb(16, 8)))
end

local function log_desc(tree, tvb)
    tree:add_le(f.log_size, tvb(0, 8))
    tree:add_le(f.log_offset, tvb(8, 8))
    return string.format("{size: %s, offset: %s}", hex64(tvb(0, 8)), hex64(tvb(8, 8)))
end

local function config(tree, tvb)
    tree:add_le(f.cfg_offset, tvb(0, 4))
    tree:add_le(f.cfg_size, tvb(4, 4))
    tree:add_le(f.cfg_flags, tvb(8, 4))
    if tvb:len() > 12 then tree:add(f.cfg_data, tvb(12)) end
    return string.format("{offset: %d, size: %d}", tvb(0, 4):le_uint(), tvb(4, 4):le_uint())
end

local function inflight(tree, tvb)
    tree:add_le(f.infl_size, tvb(0, 8))
    tree:add_le(f.infl_offset, tvb(8, 8))
    tree:add_le(f.infl_queues, tvb(16, 2))
    tree:add_le(f.infl_qsize, tvb(18, 2))
    return string.format("{size: %s, queues: %d, queue size: %d}", hex64(tvb(0, 8)), tvb(16, 2):le_uint(), tvb(18, 2):le_uint())
end

local function status(tree, tvb)
    local item = tree:add_le(f.status, tvb)
    local v = tvb(0, 4):le_uint()
    local names = {}
    for value = 0, 7 do
        local m = 2 ^ value
        if band(v, m) ~= 0 then names[#names + 1] = device_status[m] or ("BIT_" .. value) end
    end
    if #names > 0 then item:append_text(" (" .. table.concat(names, " | ") .. ")") end
    return string.format("{status: 0x%x}", v)
end

local function iotlb(tree, tvb)
    tree:add_le(f.iotlb_iova, tvb(0, 8))
    tree:add_le(f.iotlb_size, tvb(8, 8))
    tree:add_le(f.iotlb_uaddr, tvb(16, 8))
    tree:add(f.iotlb_perm, tvb(24, 1))
    tree:add(f.iotlb_type, tvb(25, 1))
    return string.format("{iova: %s, type: %d}", hex64(tvb(0, 8)), tvb(25, 1):uint())
end

local function vring_area(tree, tvb)
    local s = vring_fd_index(tree, tvb(0, 8))
    tree:add_le(f.area_size, tvb(8, 8))
    tree:add_le(f.area_offset, tvb(16, 8))
    return s
end

local function u64(field)
    return function(tree, tvb)
        tree:add_le(field, tvb)
        return tostring(tvb:le_uint64())
    end
end

local function features(tree, tvb)
    local device = ({ [1] = net_features, [2] = blk_features })[proto.prefs.device] or {}
    local names = setmetatable({}, { __index = function(_, i) return virtio_features[i] or device[i] end })
    return add_features(tree, f.features, tvb, names)
end
local function pfeatures(tree, tvb) return add_features(tree, f.pfeatures, tvb, protocol_features) end
local function shared(tree, tvb)
    tree:add(f.uuid, tvb(0, 16))
    return "{uuid}"
end

-- Payload decoders: [code] = { decoder, fixed size (nil: variable), minimum size }.
local frontend_payloads = {
    [R.SET_FEATURES] = { features, 8 },
    [R.SET_MEM_TABLE] = { memory_table, nil, 40 },
    [R.SET_LOG_BASE] = { log_desc, 16 },
    [R.SET_VRING_NUM] = { vring_state, 8 },
    [R.SET_VRING_ADDR] = { vring_addr, 40 },
    [R.SET_VRING_BASE] = { vring_state, 8 },
    [R.GET_VRING_BASE] = { vring_state, 8 },
    [R.SET_VRING_KICK] = { vring_fd_index, 8 },
    [R.SET_VRING_CALL] = { vring_fd_index, 8 },
    [R.SET_VRING_ERR] = { vring_fd_index, 8 },
    [R.SET_PROTOCOL_FEATURES] = { pfeatures, 8 },
    [R.SET_VRING_ENABLE] = { vring_state, 8 },
    [R.SEND_RARP] = { u64(f.u64), 8 },
    [R.NET_SET_MTU] = { u64(f.u64), 8 },
    [R.IOTLB_MSG] = { iotlb, 32 },
    [R.SET_VRING_ENDIAN] = { vring_state, 8 },
    [R.GET_CONFIG] = { config, nil, 12 },
    [R.SET_CONFIG] = { config, nil, 12 },
    [R.GET_INFLIGHT_FD] = { inflight, 24 },
    [R.SET_INFLIGHT_FD] = { inflight, 24 },
    [R.VRING_KICK] = { vring_state, 8 },
    [R.ADD_MEM_REG] = { single_region, 40 },
    [R.REM_MEM_REG] = { single_region, 40 },
    [R.SET_STATUS] = { status, 8 },
    [R.GET_SHARED_OBJECT] = { shared, 16 },
    [R.GET_VRING_BASE_SKIP_DRAIN] = { vring_state, 8 },
}
-- Replies with a body of their own; any other 8-byte reply is a REPLY_ACK u64.
local frontend_replies = {
    [R.GET_FEATURES] = { features, 8 },
    [R.GET_PROTOCOL_FEATURES] = { pfeatures, 8 },
    [R.GET_QUEUE_NUM] = { u64(f.u64), 8 },
    [R.GET_MAX_MEM_SLOTS] = { u64(f.u64), 8 },
    [R.GET_VRING_BASE] = { vring_state, 8 },
    [R.GET_VRING_BASE_SKIP_DRAIN] = { vring_state, 8 },
    [R.GET_CONFIG] = { config, nil, 12 },
    [R.GET_INFLIGHT_FD] = { inflight, 24 },
    [R.SET_MEM_TABLE] = { memory_table, nil, 40 },
    [R.ADD_MEM_REG] = { single_region, 40 },
    [R.GET_STATUS] = { status, 8 },
}
local backend_payloads = {
    [B.IOTLB_MSG] = { iotlb, 32 },
    [B.VRING_HOST_NOTIFIER_MSG] = { vring_area, 24 },
    [B.VRING_CALL] = { vring_state, 8 },
    [B.VRING_ERR] = { vring_state, 8 },
    [B.SHARED_OBJECT_ADD] = { shared, 16 },
    [B.SHARED_OBJECT_REMOVE] = { shared, 16 },
    [B.SHARED_OBJECT_LOOKUP] = { shared, 16 },
}

local function decode_payload(tree, tvb, decoders, code, pinfo)
    local d = decoders[code]
    if d == nil then return nil end
    local fixed = d[2]
    if fixed ~= nil and tvb:len() ~= fixed then return nil end
    if d[3] ~= nil and tvb:len() < d[3] then return nil end
    local ok, text = pcall(d[1], tree, tvb, pinfo)
    if ok then return text end
    return nil
end

function proto.dissector(tvb, pinfo, root)
    if tvb:len() < 8 or tvb(0, 1):uint() ~= 1 then return 0 end
    pinfo.cols.protocol = "vhost-user"
    local bits = tvb(1, 1):uint()
    local backend_channel = band(bits, 1) ~= 0
    local from_backend = band(bits, 2) ~= 0
    local is_close = band(bits, 4) ~= 0
    local conn = tvb(4, 4):le_uint()

    local tree = root:add(proto, tvb(), "vhost-user")
    local pre = tree:add(proto, tvb(0, 8), "Trace prefix")
    pre:add(f.version, tvb(0, 1))
    pre:add(f.backend_chan, tvb(1, 1))
    pre:add(f.from_backend, tvb(1, 1))
    pre:add(f.is_close, tvb(1, 1))
    pre:add_le(f.connection, tvb(4, 4))
    pre:append_text(string.format(": connection %d", conn))

    if is_close then
        pre:add(f.closed_by, tvb(2, 1))
        local text = tvb:len() > 8 and tvb(8):string() or "connection ended"
        tree:add(f.close_text, tvb(8), text)
        tree:append_text(": " .. text)
        pinfo.cols.info = string.format("#%d ---- %s", conn, text)
        return tvb:len()
    end
    pre:add(f.fds, tvb(2, 1))
    if tvb:len() < 20 then
        pinfo.cols.info = "truncated header"
        return tvb:len()
    end

    local code = tvb(8, 4):le_uint()
    local flags = tvb(12, 4):le_uint()
    local size = tvb(16, 4):le_uint()
    local reply = band(flags, 0x4) ~= 0
    local names = backend_channel and backend_requests or frontend_requests
    local name = names[code]

    local ritem = tree:add_le(f.request, tvb(8, 4))
    if name then
        ritem:append_text(" (" .. name .. ")")
    else
        name = "UNKNOWN(" .. code .. ")"
        ritem:add_proto_expert_info(ef_unknown)
    end
    tree:add(f.request_name, tvb(8, 4), name)
    local fitem = tree:add_le(f.flags, tvb(12, 4))
    fitem:add_le(f.flag_version, tvb(12, 4))
    fitem:add_le(f.flag_reply, tvb(12, 4))
    fitem:add_le(f.flag_need, tvb(12, 4))
    tree:add_le(f.size, tvb(16, 4))

    local payload = tvb:len() > 20 and tvb(20) or nil
    local text = nil
    if payload ~= nil then
        local ptree = tree:add(f.payload, payload)
        if payload:len() < size then ptree:add_proto_expert_info(ef_truncated) end
        -- Requests are sent by the front-end on its socket and by the back-end on its channel.
        local is_request = (from_backend == backend_channel) and not reply
        if is_request then
            text = decode_payload(ptree, payload, backend_channel and backend_payloads or frontend_payloads, code, pinfo)
        elseif not backend_channel then
            text = decode_payload(ptree, payload, frontend_replies, code, pinfo)
        end
        if text == nil and not is_request and payload:len() == 8 then
            local a = ptree:add_le(f.ack, payload)
            if payload:le_uint64():tonumber() ~= 0 then a:add_proto_expert_info(ef_nack) end
            text = "ack " .. tostring(payload:le_uint64())
        end
    end

    local arrow
    if backend_channel then arrow = from_backend and "F<=B" or "F=>B"
    else arrow = from_backend and "F<-B" or "F->B" end
    local flagtext = ""
    if band(flags, 0x8) ~= 0 then flagtext = flagtext .. " NEED_REPLY" end
    if reply then flagtext = flagtext .. " REPLY" end
    local fds = tvb(2, 1):uint()
    local info = string.format("#%d %s %s%s", conn, arrow, name, flagtext)
    if text then info = info .. " " .. text end
    if fds > 0 then info = info .. string.format(" fds=%d", fds) end
    pinfo.cols.info = info
    tree:append_text(string.format(", %s %s, size %d, fds %d", arrow, name, size, fds))
    return tvb:len()
end

DissectorTable.get("wtap_encap"):add(wtap_encaps.USER0, proto)
