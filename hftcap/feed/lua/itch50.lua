-- itch50.lua: a Wireshark dissector for NASDAQ TotalView-ITCH 5.0, shipped with hftcap.
-- It decodes one ITCH message per call, chained under Wireshark's own MoldUDP64 dissector,
-- which hands every message block on through its "moldudp64.payload" Decode-As table:
--
--   tshark -X lua_script:itch50.lua -r capture.pcapng \
--          -d udp.port==26400,moldudp64 -d moldudp64.payload,itch50
--
-- (Wireshark GUI: copy this file to ~/.local/lib/wireshark/plugins/, then Analyze > Decode As:
-- UDP port -> MoldUDP64, and MoldUDP64 payload -> ITCH50.) `hftcap decode --dissector`
-- prints the installed path. Fields are the spec's names in snake_case, as `hftcap decode
-- --json` gives them: itch50.type == "A", itch50.stock == "AAPL", itch50.price_e4 > 1000000.
-- Alpha fields are shown without their right padding; prices are integers with their implied
-- decimals in the name (_e4: 4, _e8: 8) and the decimal value in the tree text.

local p = Proto("itch50", "NASDAQ TotalView-ITCH 5.0")

local STOCK = { "stock", 8, "a" }
-- Layouts after the 11-byte header (ITCH50.md table 4): { name, size, a = alpha / u = unsigned }
local SPEC = {
  S = { "System Event", { "event_code", 1, "a" } },
  R = { "Stock Directory", STOCK, { "market_category", 1, "a" }, { "financial_status_indicator", 1, "a" },
        { "round_lot_size", 4, "u" }, { "round_lots_only", 1, "a" }, { "issue_classification", 1, "a" },
        { "issue_sub_type", 2, "a" }, { "authenticity", 1, "a" }, { "short_sale_threshold_indicator", 1, "a" },
        { "ipo_flag", 1, "a" }, { "luld_reference_price_tier", 1, "a" }, { "etp_flag", 1, "a" },
        { "etp_leverage_factor", 4, "u" }, { "inverse_indicator", 1, "a" } },
  H = { "Stock Trading Action", STOCK, { "trading_state", 1, "a" }, { "reserved", 1, "a" }, { "reason", 4, "a" } },
  Y = { "Reg SHO Short Sale Price Test Restricted Indicator", STOCK, { "reg_sho_action", 1, "a" } },
  L = { "Market Participant Position", { "mpid", 4, "a" }, STOCK, { "primary_market_maker", 1, "a" },
        { "market_maker_mode", 1, "a" }, { "market_participant_state", 1, "a" } },
  V = { "MWCB Decline Level", { "level1_e8", 8, "u" }, { "level2_e8", 8, "u" }, { "level3_e8", 8, "u" } },
  W = { "MWCB Status", { "breached_level", 1, "a" } },
  K = { "IPO Quoting Period Update", STOCK, { "ipo_quotation_release_time_s", 4, "u" },
        { "ipo_quotation_release_qualifier", 1, "a" }, { "ipo_price_e4", 4, "u" } },
  J = { "LULD Auction Collar", STOCK, { "auction_collar_reference_price_e4", 4, "u" },
        { "upper_auction_collar_price_e4", 4, "u" }, { "lower_auction_collar_price_e4", 4, "u" },
        { "auction_collar_extension", 4, "u" } },
  h = { "Operational Halt", STOCK, { "market_code", 1, "a" }, { "operational_halt_action", 1, "a" } },
  A = { "Add Order - no MPID attribution", { "order_reference_number", 8, "u" }, { "buy_sell_indicator", 1, "a" },
        { "shares", 4, "u" }, STOCK, { "price_e4", 4, "u" } },
  F = { "Add Order - with MPID attribution", { "order_reference_number", 8, "u" }, { "buy_sell_indicator", 1, "a" },
        { "shares", 4, "u" }, STOCK, { "price_e4", 4, "u" }, { "attribution", 4, "a" } },
  E = { "Order Executed", { "order_reference_number", 8, "u" }, { "executed_shares", 4, "u" },
        { "match_number", 8, "u" } },
  C = { "Order Executed With Price", { "order_reference_number", 8, "u" }, { "executed_shares", 4, "u" },
        { "match_number", 8, "u" }, { "printable", 1, "a" }, { "execution_price_e4", 4, "u" } },
  X = { "Order Cancel", { "order_reference_number", 8, "u" }, { "canceled_shares", 4, "u" } },
  D = { "Order Delete", { "order_reference_number", 8, "u" } },
  U = { "Order Replace", { "original_order_reference_number", 8, "u" }, { "new_order_reference_number", 8, "u" },
        { "shares", 4, "u" }, { "price_e4", 4, "u" } },
  P = { "Trade (non-cross)", { "order_reference_number", 8, "u" }, { "buy_sell_indicator", 1, "a" },
        { "shares", 4, "u" }, STOCK, { "price_e4", 4, "u" }, { "match_number", 8, "u" } },
  Q = { "Cross Trade", { "shares", 8, "u" }, STOCK, { "cross_price_e4", 4, "u" }, { "match_number", 8, "u" },
        { "cross_type", 1, "a" } },
  B = { "Broken Trade", { "match_number", 8, "u" } },
  I = { "Net Order Imbalance Indicator (NOII)", { "paired_shares", 8, "u" }, { "imbalance_shares", 8, "u" },
        { "imbalance_direction", 1, "a" }, STOCK, { "far_price_e4", 4, "u" }, { "near_price_e4", 4, "u" },
        { "current_reference_price_e4", 4, "u" }, { "cross_type", 1, "a" }, { "price_variation_indicator", 1, "a" } },
  N = { "Retail Price Improvement Indicator (RPII)", STOCK, { "interest_flag", 1, "a" } },
  O = { "Direct Listing with Capital Raise Price Discovery", STOCK, { "open_eligibility_status", 1, "a" },
        { "minimum_allowable_price_e4", 4, "u" }, { "maximum_allowable_price_e4", 4, "u" },
        { "near_execution_price_e4", 4, "u" }, { "near_execution_time", 8, "u" },
        { "lower_price_range_collar_e4", 4, "u" }, { "upper_price_range_collar_e4", 4, "u" } },
}

-- One ProtoField per field name; integers are uint64 whatever their width (shares is u32 in
-- A/F/P/U and u64 in Q), so one filter name serves every type.
local F = {
  type = ProtoField.string("itch50.type", "Message Type"),
  name = ProtoField.string("itch50.name", "Message Name"),
  stock_locate = ProtoField.uint64("itch50.stock_locate", "Stock Locate"),
  tracking_number = ProtoField.uint64("itch50.tracking_number", "Tracking Number"),
  timestamp_ns = ProtoField.uint64("itch50.timestamp_ns", "Timestamp (ns since midnight)"),
}
local function title(s)
  return (s:gsub("_", " "):gsub("(%a)([%w]*)", function(a, b) return a:upper() .. b end))
end
for _, spec in pairs(SPEC) do
  for i = 2, #spec do
    local name, _, kind = spec[i][1], spec[i][2], spec[i][3]
    if not F[name] then
      F[name] = kind == "a" and ProtoField.string("itch50." .. name, title(name))
                or ProtoField.uint64("itch50." .. name, title(name))
    end
  end
end
local LEN = {}
for t, spec in pairs(SPEC) do
  local n = 11
  for i = 2, #spec do n = n + spec[i][2] end
  LEN[t] = n
end
local list = {}
for _, f in pairs(F) do list[#list + 1] = f end
p.fields = list

local e_length = ProtoExpert.new("itch50.bad_length", "Message length differs from the spec's",
                                 expert.group.MALFORMED, expert.severity.ERROR)
local e_type = ProtoExpert.new("itch50.unknown_type", "Unknown ITCH 5.0 message type",
                               expert.group.UNDECODED, expert.severity.WARN)
p.experts = { e_length, e_type }

local function fmt_time(ns)
  local s = (ns / 1000000000):tonumber()
  local frac = (ns % 1000000000):tonumber()
  return string.format("%02d:%02d:%02d.%09d", math.floor(s / 3600), math.floor(s / 60) % 60, s % 60, frac)
end

function p.dissector(tvb, pinfo, tree)
  local n = tvb:len()
  if n < 1 then return 0 end
  pinfo.cols.protocol = "ITCH50"
  local t = tvb(0, 1):string()
  local spec = SPEC[t]
  local sub = tree:add(p, tvb(), "ITCH 5.0 " .. (spec and spec[1] or "unknown type") .. " (" .. t .. ")")
  sub:add(F.type, tvb(0, 1))
  if not spec then
    sub:add_proto_expert_info(e_type)
    return n
  end
  if n < LEN[t] then
    sub:add_proto_expert_info(e_length, string.format("%d bytes, %s has %d", n, t, LEN[t]))
    return n
  end
  sub:add(F.name, tvb(0, 1), spec[1])
  sub:add(F.stock_locate, tvb(1, 2), tvb(1, 2):uint64())
  sub:add(F.tracking_number, tvb(3, 2), tvb(3, 2):uint64())
  local ts = tvb(5, 6):uint64()
  sub:add(F.timestamp_ns, tvb(5, 6), ts):append_text(" (" .. fmt_time(ts) .. ")")
  local off = 11
  local stock
  for i = 2, #spec do
    local name, size, kind = spec[i][1], spec[i][2], spec[i][3]
    local r = tvb(off, size)
    if kind == "a" then
      local s = r:string():gsub(" +$", "")
      sub:add(F[name], r, s)
      if name == "stock" then stock = s end
    else
      local v = r:uint64()
      local item = sub:add(F[name], r, v)
      local scale = name:match("_e(%d)$")
      if scale then
        local d = 10 ^ tonumber(scale)
        item:append_text(string.format(" (%s.%0" .. scale .. "d)", tostring(v / d), (v % d):tonumber()))
      end
    end
    off = off + size
  end
  if n > LEN[t] then
    sub:add_proto_expert_info(e_length, string.format("%d bytes, %s has %d", n, t, LEN[t]))
  end
  local info = t .. (stock and (" " .. stock) or "")
  pinfo.cols.info:append(" ITCH " .. info)
  return n
end

DissectorTable.get("moldudp64.payload"):add_for_decode_as(p)
