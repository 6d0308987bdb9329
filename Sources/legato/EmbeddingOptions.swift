import ArgumentParser
import Glibc
import LegatoCore
import LegatoSystem

/// Hidden options with which `legato run` starts its embedded daemons (see ChildDaemon).
struct EmbeddingOptions: ParsableArguments {
    @Option(name: .customLong("ready-fd"), help: .hidden)
    var readyFD: Int32?

    @Option(name: .customLong("secret-fd"), help: .hidden)
    var secretFD: Int32?

    @Option(name: .customLong("exit-with"), help: .hidden)
    var exitWith: Int32?

    func secret(or options: SecretOptions) throws -> ClusterSecret {
        guard let fd = secretFD else { return try options.load() }
        var bytes: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 256)
        while true {
            let n = read(fd, &buf, buf.count)
            if n <= 0 { break }
            bytes += buf[0..<n]
        }
        close(fd)
        guard bytes.count >= 8 else { throw SecretError.notOnDescriptor(fd, bytes: bytes.count) }
        return ClusterSecret(bytes: bytes)
    }

    /// Exits this daemon when the process that started it is gone.
    func watchParent() {
        guard let parent = exitWith, let pidfd = try? Sys.pidfdOpen(parent) else { return }
        startThread(name: "parent-watch") {
            var pfd = pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0)
            while poll(&pfd, 1, -1) < 0 && errno == EINTR {}
            _exit(0)
        }
    }

    func announceReady(port: UInt16) {
        if let fd = readyFD { DaemonSignals.announceReady(fd: fd, port: port) }
    }
}
