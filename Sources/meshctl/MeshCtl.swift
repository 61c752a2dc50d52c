import ArgumentParser

@main
struct MeshCtl: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "meshctl",
    abstract: "Operate a SwiftMesh service mesh.",
    subcommands: [
      DemoCommand.self, StatCommand.self, TapCommand.self, IdentityCommand.self, DiagnosticsCommand.self,
      MulticlusterCommand.self, InstallCommand.self, UninstallCommand.self, InjectCommand.self, UninjectCommand.self,
      DevCommand.self,
    ]
  )
}
