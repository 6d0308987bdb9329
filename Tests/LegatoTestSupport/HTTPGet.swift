import Foundation
import Glibc
import LegatoCore
import LegatoSystem

/// One HTTP/1.1 request to a test's server, the whole answer read until the server closes.
public struct HTTPAnswer {
    public var status: Int
    public var headers: [String: String]
    public var body: String
}

public func httpRequest(_ endpoint: Endpoint, method: String = "GET", path: String) throws -> HTTPAnswer {
    let fd = try Socket.connect(host: endpoint.host, port: endpoint.port, timeoutSeconds: 5)
    defer { close(fd) }
    Socket.setTimeout(fd, seconds: 10)
    let request = Array("\(method) \(path) HTTP/1.1\r\nHost: \(endpoint)\r\nConnection: close\r\n\r\n".utf8)
    try request.withUnsafeBytes { try Socket.writeFully(fd, [$0]) }
    var raw: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = recv(fd, &chunk, chunk.count, 0)
        if n > 0 { raw += chunk[0..<n]; continue }
        if n < 0 && errno == EINTR { continue }
        break
    }
    let text = String(decoding: raw, as: UTF8.self)
    let (head, body) = text.range(of: "\r\n\r\n").map { (String(text[..<$0.lowerBound]), String(text[$0.upperBound...])) } ?? (text, "")
    let lines = head.components(separatedBy: "\r\n")
    let status = lines.first.flatMap { $0.split(separator: " ").dropFirst().first }.flatMap { Int($0) } ?? 0
    var headers: [String: String] = [:]
    for line in lines.dropFirst() {
        guard let colon = line.firstIndex(of: ":") else { continue }
        headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
    }
    return HTTPAnswer(status: status, headers: headers, body: body)
}
