import Glibc
import LegatoCore
import LegatoSystem
import LegatoWire

/// Sends raw bytes to a daemon (after a proper handshake unless `authenticate` is false) and returns
/// the last frame it answered (nil if it just closed).
public func sendHostile(to endpoint: Endpoint, secret: ClusterSecret, authenticate: Bool = true, _ bytes: [UInt8]) throws -> Frame? {
    let conn = try Connection.connect("peer", host: endpoint.host, port: endpoint.port)
    defer { conn.close() }
    Socket.setTimeout(conn.fd, seconds: 5)
    if authenticate { try Handshake.connect(conn, secret: secret, token: [UInt8](repeating: 0xa, count: 32)) }
    try bytes.withUnsafeBytes { try Socket.writeFully(conn.fd, [$0]) }
    shutdown(conn.fd, Int32(SHUT_WR))
    var last: Frame?
    while let f = try? conn.receive() { last = f }
    return last
}

public func frame(_ op: UInt8, _ payload: [UInt8], length: UInt32? = nil) -> [UInt8] {
    FrameHeader(opcode: op, requestID: 9, length: length ?? UInt32(payload.count)).encoded() + payload
}
