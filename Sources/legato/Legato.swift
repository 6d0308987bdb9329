import ArgumentParser

@main
struct Legato: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "legato",
        abstract: "Run programs with their memory on memory nodes; checkpoint and restore them.",
        subcommands: [RunCommand.self, MemdCommand.self, LogdCommand.self, CoordCommand.self, ClusterCommand.self, StatusCommand.self, CheckpointCommand.self, RestoreCommand.self, LsCommand.self, BenchCommand.self]
    )
}
