import Glibc
import Logging

/// Process-wide logging setup: swift-log to stderr, level from `LEGATO_LOG` (trace…critical, default info).
public enum LegatoLogging {
    private static let once: Void = {
        let env = getenv("LEGATO_LOG").map { String(cString: $0) } ?? ""
        let level = Logger.Level(rawValue: env.lowercased()) ?? .info
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
    }()

    public static func bootstrap() { _ = once }

    public static func logger(_ label: String) -> Logger {
        bootstrap()
        return Logger(label: label)
    }
}

public typealias Logger = Logging.Logger
