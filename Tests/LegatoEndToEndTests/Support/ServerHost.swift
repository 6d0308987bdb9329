import Foundation
import Glibc

/// A machine for a server under test: a network namespace joined to the test's own by a veth pair,
/// the server's address `address` on its side, the test's `peerAddress` on ours. `crash()` cuts it
/// off, so that nothing it sends afterwards reaches us — as when a machine dies (a process killed
/// with kill -9 sends FIN or RST for its connections; a dead machine sends nothing); `replace()`
/// brings up another machine with the same address, as a failed-over host or a floating address.
final class ServerHost {
    let namespace: String
    let address: String
    let peerAddress: String
    private let ourLink: String
    private let theirLink: String

    init() throws {
        let tag = Int(getpid() % 60000)
        namespace = "legato-test-\(tag)"
        (ourLink, theirLink) = ("lgt\(tag)h", "lgt\(tag)n")
        let net = "10.\(200 + tag % 50).\(tag % 250)"
        (address, peerAddress) = (net + ".1", net + ".2")
        try replace()
    }

    deinit {
        try? Self.ip(["netns", "del", namespace])
        try? Self.ip(["link", "del", ourLink])
    }

    /// argv run inside the machine's network namespace.
    func inside(_ argv: [String]) -> [String] { ["ip", "netns", "exec", namespace] + argv }

    /// Nothing passes between the machine and us any more: its link is gone (with whatever it
    /// had queued to send).
    func crash() throws { try Self.ip(["link", "del", ourLink]) }

    /// A new machine (namespace) with the same address in place of the old one, which goes when
    /// its last process does.
    func replace() throws {
        try? Self.ip(["netns", "del", namespace])
        try? Self.ip(["link", "del", ourLink])
        try Self.ip(["netns", "add", namespace])
        try Self.ip(["link", "add", ourLink, "type", "veth", "peer", "name", theirLink])
        try Self.ip(["link", "set", theirLink, "netns", namespace])
        try Self.ip(["addr", "add", peerAddress + "/24", "dev", ourLink])
        try Self.ip(["link", "set", ourLink, "up"])
        try Self.ip(["netns", "exec", namespace, "ip", "addr", "add", address + "/24", "dev", theirLink])
        try Self.ip(["netns", "exec", namespace, "ip", "link", "set", theirLink, "up"])
        try Self.ip(["netns", "exec", namespace, "ip", "link", "set", "lo", "up"])
    }

    private static func ip(_ args: [String]) throws {
        let r = try runCommand(["ip"] + args, timeoutSeconds: 30)
        guard r.status == 0 else { throw TestFailure("ip \(args.joined(separator: " ")): \(r.stderr)") }
    }
}
