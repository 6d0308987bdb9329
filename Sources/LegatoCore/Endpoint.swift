/// A `HOST:PORT` pair as given on command lines (`127.0.0.1:7301`, `[::1]:7301`, `node3:7301`).
public struct Endpoint: Hashable, CustomStringConvertible, Sendable {
    public let host: String
    public let port: UInt16

    public init(host: String, port: UInt16) {
        self.host = host
        self.port = port
    }

    public init?(parsing text: String) {
        var s = Substring(text)
        let host: Substring
        if s.hasPrefix("[") {
            guard let close = s.firstIndex(of: "]") else { return nil }
            host = s[s.index(after: s.startIndex)..<close]
            s = s[s.index(after: close)...]
            guard s.hasPrefix(":") else { return nil }
            s = s.dropFirst()
        } else {
            guard let colon = s.lastIndex(of: ":") else { return nil }
            host = s[..<colon]
            s = s[s.index(after: colon)...]
        }
        guard !host.isEmpty, let port = UInt16(s) else { return nil }
        self.host = String(host)
        self.port = port
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// Parses a comma-separated list; nil if any element is malformed.
    public static func list(_ text: String) -> [Endpoint]? {
        let parts = text.split(separator: ",").map { String($0) }
        let eps = parts.compactMap { Endpoint(parsing: $0) }
        return eps.count == parts.count && !eps.isEmpty ? eps : nil
    }
}
