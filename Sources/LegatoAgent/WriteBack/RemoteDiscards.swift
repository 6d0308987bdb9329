/// Keys whose copies on memory nodes are to go, gathered per node into runs of consecutive keys,
/// then sent as one discard per node (in order after the stores sent before it).
struct RemoteDiscards {
    private var byNode: [Int: [(vpn: UInt64, count: UInt64)]] = [:]

    mutating func add(_ key: UInt64, on node: Int) {
        if var last = byNode[node]?.last, last.vpn + last.count == key {
            last.count += 1
            byNode[node]![byNode[node]!.count - 1] = last
        } else {
            byNode[node, default: []].append((key, 1))
        }
    }

    func send(through writeBack: WriteBackBuffer) {
        for (node, ranges) in byNode { writeBack.discard(node: node, ranges: ranges) }
    }
}
