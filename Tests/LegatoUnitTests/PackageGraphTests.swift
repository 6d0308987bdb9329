import Foundation
import Testing

/// The module graph Package.swift declares is the one the sources use: no dead edge, no missing one,
/// and no service importing another (services talk through the clients in LegatoClients).
@Suite struct PackageGraphTests {
    static let services: Set<String> = ["LegatoAgent", "LegatoMemoryNode", "LegatoLogNode", "LegatoCoordinator"]

    struct Target {
        var name: String
        var path: String
        var dependencies: Set<String>
    }

    static let root: String = {
        var dir = (#filePath as NSString).deletingLastPathComponent
        while !FileManager.default.fileExists(atPath: dir + "/Package.swift") && dir.count > 1 {
            dir = (dir as NSString).deletingLastPathComponent
        }
        return dir
    }()

    /// The package's own targets, read from Package.swift's text (`.target(name: ..., dependencies: [...])`).
    static func targets() throws -> [Target] {
        let manifest = try String(contentsOfFile: root + "/Package.swift", encoding: .utf8)
        var out: [Target] = []
        for kind in [".target(", ".executableTarget(", ".testTarget("] {
            var rest = manifest[...]
            while let start = rest.range(of: kind) {
                let chunk = rest[start.upperBound...]
                // The call ends at the parenthesis that balances the one opening it.
                var depth = 1
                var end = chunk.startIndex
                for i in chunk.indices {
                    if chunk[i] == "(" { depth += 1 }
                    if chunk[i] == ")" { depth -= 1; if depth == 0 { end = i; break } }
                }
                let call = String(chunk[..<end])
                rest = chunk[end...]
                guard let name = firstMatch(#"name:\s*"([A-Za-z]+)""#, in: call) else { continue }
                let path = firstMatch(#"path:\s*"([^"]+)""#, in: call) ?? (kind == ".testTarget(" ? "Tests/\(name)" : "Sources/\(name)")
                var deps = Set<String>()
                if let list = call.range(of: "dependencies: [") {
                    var text = String(call[list.upperBound...])
                    if let close = text.range(of: "]") { text = String(text[..<close.lowerBound]) }
                    text = text.replacingOccurrences(of: #"\.product\([^)]*\)"#, with: "", options: .regularExpression)
                    deps = Set(allMatches(#""([A-Za-z]+)""#, in: text))
                }
                out.append(Target(name: name, path: path, dependencies: deps))
            }
        }
        return out
    }

    /// The package's own modules a target's Swift files import.
    static func imports(of target: Target, among local: Set<String>) throws -> Set<String> {
        let dir = root + "/" + target.path
        var found = Set<String>()
        guard let files = FileManager.default.enumerator(atPath: dir) else { return found }
        for case let file as String in files where file.hasSuffix(".swift") {
            let text = try String(contentsOfFile: dir + "/" + file, encoding: .utf8)
            for line in text.split(separator: "\n") {
                let words = line.split(separator: " ")
                guard let i = words.firstIndex(of: "import"), i == words.startIndex || words[words.startIndex] == "@testable",
                      i + 1 < words.endIndex else { continue }
                let module = String(words[i + 1])
                if local.contains(module) { found.insert(module) }
            }
        }
        return found
    }

    @Test func declaredDependenciesAreTheImportedOnes() throws {
        let targets = try Self.targets()
        let local = Set(targets.map(\.name))
        #expect(local.isSuperset(of: Self.services), "Package.swift lost a service target: \(local)")
        for t in targets where t.path.hasPrefix("Sources/") || t.path.hasPrefix("Tests/") {
            // C targets have no Swift imports to compare.
            guard t.name != "CShims" else { continue }
            let used = try Self.imports(of: t, among: local)
            let declared = t.dependencies.intersection(local)
            // A test target may depend on an executable only to have it built ("legato").
            let dead = declared.subtracting(used).subtracting(["legato"])
            #expect(dead.isEmpty, "\(t.name) declares \(dead.sorted()) but imports none of it")
            #expect(used.subtracting(declared).isEmpty, "\(t.name) imports \(used.subtracting(declared).sorted()) without declaring it")
        }
    }

    @Test func noServiceImportsAnother() throws {
        let targets = try Self.targets()
        let local = Set(targets.map(\.name))
        for t in targets where Self.services.contains(t.name) {
            let others = try Self.imports(of: t, among: local).intersection(Self.services)
            #expect(others.isEmpty, "\(t.name) imports the services \(others.sorted())")
        }
    }

    static func firstMatch(_ pattern: String, in text: String) -> String? { allMatches(pattern, in: text).first }

    static func allMatches(_ pattern: String, in text: String) -> [String] {
        guard let re = try? NSRegularExpression(pattern: pattern) else { return [] }
        let ns = text as NSString
        return re.matches(in: text, range: NSRange(location: 0, length: ns.length)).map { ns.substring(with: $0.range(at: 1)) }
    }
}
