import ArgumentParser
import Foundation
import MeshCore
import MeshDemo
import UnixSignals

/// `meshctl dev backend`: the demo's application as a process of its own, an HTTP/1.1 server answering every
/// request with `cluster=<cluster> pod=<pod>`, so a caller sees who served it.
///
///     meshctl dev backend --cluster east --pod backend-0 --listen 127.0.0.1:18000
struct DevBackendCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "backend",
    abstract: "Run the demo's backend application: answers every request with its cluster and pod name.")

  @Option(help: "The cluster name it reports.")
  var cluster: String
  @Option(help: "The pod name it reports.")
  var pod: String = "backend-0"
  @Option(help: "Address to listen on, HOST:PORT.")
  var listen: String = "127.0.0.1:8080"
  @Option(help: "Milliseconds to wait before each answer (to stand for real work).")
  var delayMs: Int = 0

  func validate() throws {
    guard delayMs >= 0 else { throw ValidationError("--delay-ms must be 0 or more") }
  }

  func run() async throws {
    let address: Authority
    do { address = try Authority(listen) } catch { throw ValidationError("--listen '\(listen)': \(error)") }
    let backend = try await DemoBackend(
      cluster: cluster, pod: pod, host: address.host, port: address.port, delay: .milliseconds(delayMs))
    print("backend \(pod) of \(cluster) listening on \(address.host):\(backend.port)")
    fflush(nil)
    // Runs until SIGTERM or SIGINT, then closes its listener.
    for await _ in await UnixSignalsSequence(trapping: .sigterm, .sigint) { break }
    await backend.stop()
  }
}
