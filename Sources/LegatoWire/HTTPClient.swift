import Foundation
import Glibc
import LegatoCore
import LegatoSystem

/// A small HTTP/1.1 client for trusted hosts (the coordinator's etcd store, tests of /metrics).
/// One connection per request; Content-Length and chunked bodies.
public enum HTTPClient {
    public struct Response {
        public let status: Int
        /// Header names in lower case.
        public let headers: [String: String]
        public let body: [UInt8]
    }

    public static func post(host: String, port: UInt16, path: String, json: [String: Any], timeoutSeconds: Double = 10) throws -> Response {
        let body = try JSONSerialization.data(withJSONObject: json)
        return try request(host: host, port: port, method: "POST", path: path, body: [UInt8](body), contentType: "application/json",
                           timeoutSeconds: timeoutSeconds)
    }

    public static func get(host: String, port: UInt16, path: String, timeoutSeconds: Double = 10) throws -> Response {
        try request(host: host, port: port, method: "GET", path: path, timeoutSeconds: timeoutSeconds)
    }

    /// One request on a connection of its own, read until the server closes it.
    public static func request(host: String, port: UInt16, method: String, path: String, body: [UInt8] = [], contentType: String? = nil,
                               timeoutSeconds: Double = 10) throws -> Response {
        var head = "\(method) \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\n"
        if let contentType { head += "Content-Type: \(contentType)\r\nContent-Length: \(body.count)\r\n" }
        head += "Connection: close\r\n\r\n"
        let fd = try Socket.connect(host: host, port: port, timeoutSeconds: timeoutSeconds)
        defer { close(fd) }
        Socket.setTimeout(fd, seconds: timeoutSeconds)
        let request = Array(head.utf8) + body
        try request.withUnsafeBytes { try Socket.writeFully(fd, [$0]) }
        var raw: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = Sys.retryingEINTR { recv(fd, &buf, buf.count, 0) }
            if n > 0 { raw += buf[0..<n]; continue }
            if n == 0 { break }
            throw SystemError.fromErrno("reading the HTTP response from \(host):\(port)")
        }
        return try parse(raw, from: "\(host):\(port)")
    }

    static func parse(_ raw: [UInt8], from peer: String) throws -> Response {
        guard let split = raw.firstRange(of: Array("\r\n\r\n".utf8)) else {
            throw HTTPError.malformed("response", peer: peer)
        }
        let head = String(decoding: raw[..<split.lowerBound], as: UTF8.self)
        var body = Array(raw[split.upperBound...])
        let lines = head.split(separator: "\r\n")
        guard let statusLine = lines.first, statusLine.hasPrefix("HTTP/1."),
              let status = Int(statusLine.split(separator: " ").dropFirst().first ?? "") else {
            throw HTTPError.malformed("status line", peer: peer)
        }
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        if headers["transfer-encoding"]?.lowercased().contains("chunked") == true { body = try dechunk(body, from: peer) }
        return Response(status: status, headers: headers, body: body)
    }

    static func dechunk(_ b: [UInt8], from peer: String) throws -> [UInt8] {
        var out: [UInt8] = []
        var i = 0
        while i < b.count {
            guard let eol = b[i...].firstRange(of: Array("\r\n".utf8)) else { break }
            let sizeText = String(decoding: b[i..<eol.lowerBound], as: UTF8.self).split(separator: ";").first ?? ""
            guard let size = Int(sizeText.trimmingCharacters(in: .whitespaces), radix: 16) else {
                throw HTTPError.malformed("chunked body", peer: peer)
            }
            if size == 0 { break }
            let start = eol.upperBound
            guard start + size <= b.count else { throw HTTPError.truncated("chunked body", peer: peer) }
            out += b[start..<start + size]
            i = start + size + 2
        }
        return out
    }
}

public enum HTTPError: Error, CustomStringConvertible, Equatable {
    case malformed(String, peer: String)
    case truncated(String, peer: String)
    public var description: String {
        switch self {
        case .malformed(let what, let peer): return "malformed HTTP \(what) from \(peer)"
        case .truncated(let what, let peer): return "truncated HTTP \(what) from \(peer)"
        }
    }
}
