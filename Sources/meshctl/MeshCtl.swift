import ArgumentParser

@main
struct MeshCtl: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "meshctl",
    abstract: "Operate a SwiftMesh service mesh.",
    subcommands: [IdentityCommand.self, DiagnosticsCommand.self, MulticlusterCommand.self, DevCommand.self]
  )
}
