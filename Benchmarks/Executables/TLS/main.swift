// Mutual-TLS benchmark: full handshakes per second and bulk throughput through MeshTLS, each beside the
// same measured with openssl (s_server + s_time, same certificates, TLS 1.3, client certificates) in the
// same run, printed as ratios.
//
//   swift run --package-path Benchmarks -c release TLSBenchmark [seconds-per-measurement] [bulk-megabytes]
//
// Loopback only; every loop is bounded by a count and a time limit.
import Foundation
import MeshCore
import MeshIdentity
import MeshTLS
import NIOCore
import NIOPosix
import _MeshTestSupport

let arguments = CommandLine.arguments
let seconds = arguments.count > 1 ? Double(arguments[1]) ?? 5 : 5
let bulkMegabytes = arguments.count > 2 ? Int(arguments[2]) ?? 32 : 32
let maxHandshakes = 20_000
let maxTransfers = 200

let pki = try TestPKI()
let serverIdentity = IdentityName.test("backend")
let clientIdentity = IdentityName.test("web")
let serverMaterial = try pki.workload(serverIdentity)
let clientMaterial = try pki.workload(clientIdentity)
let server = try MeshTLS(material: serverMaterial, trustAnchors: [pki.anchor.certificate])
let client = try MeshTLS(material: clientMaterial, trustAnchors: [pki.anchor.certificate])

let dir = try TemporaryDirectory(prefix: "swiftmesh-tls-bench")
defer { dir.remove() }
try pki.write(to: dir.path)
try PEMFiles.write(PEMFiles.pem([serverMaterial.leaf]), to: dir.file("server.crt"))
try PEMFiles.write(PEMFiles.pem(serverMaterial.intermediates), to: dir.file("chain.crt"))
try PEMFiles.write(PEMFiles.pem(serverMaterial.privateKey), to: dir.file("server.key"))
try PEMFiles.write(PEMFiles.pem(clientMaterial.chain), to: dir.file("client.crt"))
try PEMFiles.write(PEMFiles.pem(clientMaterial.privateKey), to: dir.file("client.key"))
let bulkBytes = bulkMegabytes * 1024 * 1024
FileManager.default.createFile(atPath: dir.file("bulk.bin"), contents: Data(count: bulkBytes))

// MARK: MeshTLS handshakes: a fresh connection and a full mutual handshake each time.

let handshakeStart = ContinuousClock.now
let meshHandshakes = try await MeshTLSEcho.withServer(tls: server) { port in
  var done = 0
  while done < maxHandshakes && ContinuousClock.now < handshakeStart + .seconds(seconds) {
    try await MeshTLSEcho.withConnection(tls: client, port: port, expected: serverIdentity) { _, inbound, _ in
      // Read the server's first line, as s_time reads a page: the handshake is complete on both sides.
      for try await _ in inbound { break }
    }
    done += 1
  }
  return done
}
let meshHandshakeRate = Double(meshHandshakes) / (ContinuousClock.now - handshakeStart).seconds

// MARK: MeshTLS bulk: the server sends the file's size in zeros on each connection, then closes.

let chunk = ByteBuffer(repeating: 0, count: 64 * 1024)
let bulkServer = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
  .bind(host: "127.0.0.1", port: 0) { child in
    child.eventLoop.makeCompletedFuture {
      let session = try server.addServerHandlers(to: child.pipeline.syncOperations)
      return (session, try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: child))
    }
  }
let bulkPort = bulkServer.channel.localAddress!.port!
let bulkStart = ContinuousClock.now
let meshBytes = try await meshBulk()

nonisolated func meshBulk() async throws -> Int {
  return try await withThrowingTaskGroup(of: Void.self) { group in
    group.addTask {
      try await bulkServer.executeThenClose { inbound in
        for try await (session, child) in inbound {
          _ = try await session.get()
          try await child.executeThenClose { _, outbound in
            var sent = 0
            while sent < bulkBytes {
              try await outbound.write(chunk)
              sent += chunk.readableBytes
            }
          }
        }
      }
    }
    let deadline = bulkStart + .seconds(seconds)
    var meshTransfers = 0
    var meshBytes = 0
    while meshTransfers < maxTransfers && ContinuousClock.now < deadline {
      meshBytes += try await MeshTLSEcho.withConnection(tls: client, port: bulkPort, expected: serverIdentity) {
        _, inbound, _ in
        var received = 0
        for try await buffer in inbound { received += buffer.readableBytes }
        return received
      }
      meshTransfers += 1
    }
    group.cancelAll()
    return meshBytes
  }
}

let meshThroughput = Double(meshBytes) / (ContinuousClock.now - bulkStart).seconds

// MARK: openssl, same certificates: s_server -WWW with client certificates, s_time as the client.

func opensslMeasure(newConnections: Bool, page: String) async throws -> (connections: Int, seconds: Double, bytes: Int) {
  let port = try await MeshTLSEcho.freePort()
  let s = try BackgroundProcess(
    "/bin/sh",
    [
      "-c",
      "cd \(dir.path) && exec openssl s_server -accept 127.0.0.1:\(port) -cert server.crt -cert_chain chain.crt -key server.key -CAfile ca.crt -Verify 1 -tls1_3 -WWW -quiet",
    ])
  defer { s.terminate() }
  try await Task.sleep(for: .milliseconds(300))
  let out = try await Subprocess.run(
    "openssl",
    [
      "s_time", "-connect", "127.0.0.1:\(port)", "-new", "-time", "\(Int(seconds))", "-www", page,
      "-cert", dir.file("client.crt"), "-key", dir.file("client.key"), "-CAfile", dir.file("ca.crt"),
    ])
  // "1234 connections in 5.01 real seconds, 32 bytes read per connection"
  for line in out.stdout.split(separator: "\n") where line.contains("real seconds") {
    let words = line.split(separator: " ")
    let connections = Int(words[0]) ?? 0
    let secs = Double(words[3]) ?? seconds
    let bytes = Int(words[6]) ?? 0
    return (connections, secs, bytes)
  }
  throw TestFailure("openssl s_time printed no result:\n\(out)")
}

let sslHandshakes = try await opensslMeasure(newConnections: true, page: "/ca.crt")
let sslHandshakeRate = Double(sslHandshakes.connections) / sslHandshakes.seconds
let sslBulk = try await opensslMeasure(newConnections: true, page: "/bulk.bin")
let sslThroughput = Double(sslBulk.connections * sslBulk.bytes) / sslBulk.seconds

func format(_ value: Double, _ unit: String) -> String { String(format: "%10.1f %@", value, unit) }
print("TLS 1.3, ECDSA P-256, mutual authentication, loopback, \(Int(seconds)) s per measurement")
print("measurement            MeshTLS               openssl               MeshTLS/openssl")
print("full handshakes     \(format(meshHandshakeRate, "hs/s "))   \(format(sslHandshakeRate, "hs/s "))   \(String(format: "%6.2f", meshHandshakeRate / sslHandshakeRate))")
print("bulk (\(bulkMegabytes) MB/conn)  \(format(meshThroughput / 1_048_576, "MB/s "))   \(format(sslThroughput / 1_048_576, "MB/s "))   \(String(format: "%6.2f", meshThroughput / sslThroughput))")

extension Duration {
  var seconds: Double {
    let (s, atto) = components
    return Double(s) + Double(atto) / 1e18
  }
}
