import ArgumentParser

struct DevCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "dev",
    abstract: "Development tools: an embedded Kubernetes API server.",
    subcommands: [DevKubeAPICommand.self]
  )
}
