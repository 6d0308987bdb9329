import Testing
@testable import LegatoCore

@Suite struct ByteSizeTests {
    @Test func parsesOperatorSizes() {
        #expect(ByteSize(parsing: "64M")?.bytes == 64 << 20)
        #expect(ByteSize(parsing: "1G")?.bytes == 1 << 30)
        #expect(ByteSize(parsing: "512k")?.bytes == 512 << 10)
        #expect(ByteSize(parsing: "4096")?.bytes == 4096)
        #expect(ByteSize(parsing: "1.5G")?.bytes == 3 << 29)
        #expect(ByteSize(parsing: "2GiB")?.bytes == 2 << 30)
        #expect(ByteSize(parsing: "8MB")?.bytes == 8 << 20)
    }

    @Test func refusesNonsense() {
        for bad in ["", "M", "-1M", "12X", "1e30", "nan", "1..2M"] { #expect(ByteSize(parsing: bad) == nil, "\(bad)") }
    }

    @Test func formatsShort() {
        #expect(formatSize(64 << 20) == "64M")
        #expect(formatSize(3 << 29) == "1.5G")
        #expect(formatSize(100) == "100B")
    }
}

@Suite struct EndpointTests {
    @Test func parsesHostPort() {
        #expect(Endpoint(parsing: "127.0.0.1:7301") == Endpoint(host: "127.0.0.1", port: 7301))
        #expect(Endpoint(parsing: "[::1]:80") == Endpoint(host: "::1", port: 80))
        #expect(Endpoint(parsing: "node3:1")?.host == "node3")
        #expect(Endpoint(parsing: "node3") == nil)
        #expect(Endpoint(parsing: ":80") == nil)
        #expect(Endpoint(parsing: "h:99999") == nil)
        #expect(Endpoint.list("a:1,b:2")?.count == 2)
        #expect(Endpoint.list("a:1,b") == nil)
    }
}
