import ArgumentParser
import Foundation
import MeshAPI
import MeshCore
import MeshProxy

/// `meshctl tap`: a live view of the requests one proxy handles (its `--tap` API).
///
///     meshctl tap --proxy 127.0.0.1:4190 --authority backend.default.svc.cluster.local --max 20
struct TapCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "tap",
    abstract: "Stream the requests a proxy handles, live: req, rsp and end lines per request.",
    discussion: """
      Reads the proxy's tap API (mesh-proxy --tap HOST:PORT). Each matching request prints a 'req' line when \
      it arrives, 'rsp' when the response starts (with its latency) and 'end' when it is done (duration, \
      status, the proxy's error when it answered itself). Runs until interrupted, or until the next --max \
      requests ended.
      """)

  @Option(help: "The proxy's tap address, HOST:PORT.")
  var proxy: String = "127.0.0.1:4190"
  @Option(help: "Only requests to this authority (host or host:port).")
  var authority: String?
  @Option(help: "Only requests whose path starts with this.")
  var path: String?
  @Option(help: "Only requests with this method.")
  var method: String?
  @Option(help: "Only this side of the proxy: inbound, outbound or gateway.")
  var direction: String?
  @Option(help: "Observe the next this many requests, and stop once they ended (0: until interrupted).")
  var max: UInt32 = 0
  @Option(name: [.short, .customLong("output")], help: "Output: text (one line per event) or json (one object per line).")
  var output: String = "text"

  func validate() throws {
    guard ["text", "json"].contains(output) else { throw ValidationError("--output must be text or json") }
    if let direction, !["inbound", "outbound", "gateway"].contains(direction) {
      throw ValidationError("--direction must be inbound, outbound or gateway")
    }
    do { _ = try Authority(proxy) } catch { throw ValidationError("--proxy '\(proxy)': \(error.message)") }
  }

  func run() async throws {
    var match = Swiftmesh_Tap_Match()
    match.authority = authority ?? ""
    match.pathPrefix = path ?? ""
    match.method = method ?? ""
    match.direction = direction ?? ""
    let json = output == "json"
    do {
      try await TapClient.observe(proxy: try Authority(proxy), match: match, maxRequests: max) { event in
        print(json ? try TapClient.json(event) : TapClient.line(event))
        fflush(nil)
      }
    } catch {
      throw TapCLIError("tap \(proxy): \(error)")
    }
  }
}

struct TapCLIError: Error, CustomStringConvertible {
  var description: String
  init(_ description: String) { self.description = description }
}
