import CShims
import Glibc

extension Sys {
    /// A key-value table in one SQLite file (WAL mode, synchronous=FULL): the coordinator's default store.
    public final class SQLiteKV {
        private var db: OpaquePointer?
        public let path: String
        private let lock = Lock()

        public init(path: String) throws {
            self.path = path
            if sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nil) != SQLITE_OK {
                let why = db.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
                sqlite3_close(db)
                throw SystemError("opening SQLite database \(path): \(why)", code: EIO)
            }
            sqlite3_busy_timeout(db, 5000)
            try exec("PRAGMA journal_mode=WAL")
            try exec("PRAGMA synchronous=FULL")
            try exec("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL)")
        }

        deinit { sqlite3_close(db) }

        private func fail(_ what: String) -> SystemError {
            SystemError("SQLite \(what) on \(path): \(String(cString: sqlite3_errmsg(db)))", code: EIO)
        }

        public func exec(_ sql: String) throws {
            if sqlite3_exec(db, sql, nil, nil, nil) != SQLITE_OK { throw fail(sql) }
        }

        private func prepare(_ sql: String) throws -> OpaquePointer {
            var st: OpaquePointer?
            if sqlite3_prepare_v2(db, sql, -1, &st, nil) != SQLITE_OK { throw fail("prepare") }
            return st!
        }

        public func put(_ key: String, _ value: [UInt8]) throws {
            try lock.withLock {
                let st = try prepare("INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value")
                defer { sqlite3_finalize(st) }
                _ = lg_sqlite_bind_text(st, 1, key)
                _ = value.withUnsafeBytes { lg_sqlite_bind_blob(st, 2, $0.baseAddress ?? UnsafeRawPointer(bitPattern: 1), Int32($0.count)) }
                if sqlite3_step(st) != SQLITE_DONE { throw fail("put \(key)") }
            }
        }

        public func get(_ key: String) throws -> [UInt8]? {
            try lock.withLock {
                let st = try prepare("SELECT value FROM kv WHERE key = ?")
                defer { sqlite3_finalize(st) }
                _ = lg_sqlite_bind_text(st, 1, key)
                let rc = sqlite3_step(st)
                if rc == SQLITE_DONE { return nil }
                if rc != SQLITE_ROW { throw fail("get \(key)") }
                return column(st, 0)
            }
        }

        public func delete(_ key: String) throws {
            try lock.withLock {
                let st = try prepare("DELETE FROM kv WHERE key = ?")
                defer { sqlite3_finalize(st) }
                _ = lg_sqlite_bind_text(st, 1, key)
                if sqlite3_step(st) != SQLITE_DONE { throw fail("delete \(key)") }
            }
        }

        /// Every (key, value) whose key starts with `prefix`, in key order.
        public func list(prefix: String) throws -> [(String, [UInt8])] {
            try lock.withLock {
                let st = try prepare("SELECT key, value FROM kv WHERE substr(key, 1, ?) = ? ORDER BY key")
                defer { sqlite3_finalize(st) }
                sqlite3_bind_int(st, 1, Int32(prefix.utf8.count))
                _ = lg_sqlite_bind_text(st, 2, prefix)
                var out: [(String, [UInt8])] = []
                while true {
                    let rc = sqlite3_step(st)
                    if rc == SQLITE_DONE { break }
                    if rc != SQLITE_ROW { throw fail("list \(prefix)") }
                    out.append((String(cString: sqlite3_column_text(st, 0)), column(st, 1)))
                }
                return out
            }
        }

        private func column(_ st: OpaquePointer, _ i: Int32) -> [UInt8] {
            let n = Int(sqlite3_column_bytes(st, i))
            guard n > 0, let p = sqlite3_column_blob(st, i) else { return [] }
            return Array(UnsafeRawBufferPointer(start: p, count: n))
        }
    }
}
