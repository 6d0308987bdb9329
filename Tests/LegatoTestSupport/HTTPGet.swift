import LegatoCore
import LegatoWire

/// One HTTP/1.1 request to a test's server (HTTPClient), the body as text.
public struct HTTPAnswer {
    public var status: Int
    public var headers: [String: String]
    public var body: String
}

public func httpRequest(_ endpoint: Endpoint, method: String = "GET", path: String) throws -> HTTPAnswer {
    let r = try HTTPClient.request(host: endpoint.host, port: endpoint.port, method: method, path: path)
    return HTTPAnswer(status: r.status, headers: r.headers, body: String(decoding: r.body, as: UTF8.self))
}
