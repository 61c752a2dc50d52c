import ArgumentParser

struct DevCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "dev",
    abstract: "Development tools: an embedded Kubernetes API server, the demo's backend application.",
    subcommands: [DevKubeAPICommand.self, DevBackendCommand.self]
  )
}
