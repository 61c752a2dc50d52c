import Foundation
import MeshCore
import MeshIdentity
import MeshTLS
import NIOCore
import Synchronization
import Testing
import X509
import _MeshTestSupport

/// Collects what a test server saw, in order.
final class SessionLog: Sendable {
  private let box = Mutex<[Result<MeshTLSSession, MeshTLSError>]>([])
  @Sendable func record(_ result: Result<MeshTLSSession, MeshTLSError>) { box.withLock { $0.append(result) } }
  var all: [Result<MeshTLSSession, MeshTLSError>] { box.withLock { $0 } }

  /// Waits (polling with a deadline) until `count` sessions are recorded.
  func wait(for count: Int, timeout: Duration = .seconds(10)) async throws -> [Result<MeshTLSSession, MeshTLSError>] {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
      let seen = all
      if seen.count >= count { return seen }
      try await Task.sleep(for: .milliseconds(10))
    }
    throw TestFailure("expected \(count) TLS sessions, saw \(all.count): \(all)")
  }
}

func readLine(_ iterator: inout NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator) async throws -> String {
  var text = ""
  while !text.contains("\n") {
    guard let chunk = try await iterator.next() else { break }
    text += String(buffer: chunk)
  }
  return text
}

@Suite("Mutual TLS")
struct MeshTLSTests {
  let web = IdentityName.test("web")
  let backend = IdentityName.test("backend")

  @Test("openssl s_client with a mesh leaf is accepted and the server learns its identity; an unrelated anchor's leaf is refused")
  func opensslClient() async throws {
    let pki = try TestPKI()
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    try pki.write(to: dir.path)
    let client = try pki.workload(web)
    try PEMFiles.write(PEMFiles.pem([client.leaf]), to: dir.file("web.crt"))
    try PEMFiles.write(PEMFiles.pem(client.intermediates), to: dir.file("web-chain.crt"))
    try PEMFiles.write(PEMFiles.pem(client.privateKey), to: dir.file("web.key"))
    let stranger = try TestPKI().workload(web)
    try PEMFiles.write(PEMFiles.pem([stranger.leaf]), to: dir.file("stranger.crt"))
    try PEMFiles.write(PEMFiles.pem(stranger.intermediates), to: dir.file("stranger-chain.crt"))
    try PEMFiles.write(PEMFiles.pem(stranger.privateKey), to: dir.file("stranger.key"))

    let server = try MeshTLS(material: try pki.workload(backend), trustAnchors: [pki.anchor.certificate])
    let log = SessionLog()
    try await MeshTLSEcho.withServer(tls: server, onSession: log.record) { port in
      let good = try await Subprocess.run(
        "openssl",
        [
          "s_client", "-connect", "127.0.0.1:\(port)", "-servername", backend.description, "-cert", dir.file("web.crt"),
          "-cert_chain", dir.file("web-chain.crt"), "-key", dir.file("web.key"), "-CAfile", dir.file("ca.crt"), "-tls1_3", "-ign_eof", "-quiet",
        ],
        input: Data("ping\nquit\n".utf8))
      #expect(good.stdout.contains("identity=\(web)"), "\(good)")
      #expect(good.stdout.contains("ping"))

      let bad = try await Subprocess.run(
        "openssl",
        [
          "s_client", "-connect", "127.0.0.1:\(port)", "-cert", dir.file("stranger.crt"), "-cert_chain", dir.file("stranger-chain.crt"),
          "-key", dir.file("stranger.key"),
          "-CAfile", dir.file("ca.crt"), "-tls1_3", "-ign_eof", "-quiet",
        ],
        input: Data("ping\nquit\n".utf8))
      #expect(!bad.stdout.contains("identity="), "\(bad)")
    }
    let sessions = try await log.wait(for: 2)
    #expect(try sessions[0].get().peerIdentity == web)
    #expect(throws: MeshTLSError(.untrustedChain, "")) { try sessions[1].get() }
  }

  @Test("a client refuses an openssl s_server of the same anchor with another identity, naming both; accepts the right one")
  func opensslServer() async throws {
    let pki = try TestPKI()
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    try pki.write(to: dir.path)
    let impostor = try pki.workload(.test("api"))
    try PEMFiles.write(PEMFiles.pem([impostor.leaf]), to: dir.file("api.crt"))
    try PEMFiles.write(PEMFiles.pem(impostor.intermediates), to: dir.file("chain.crt"))
    try PEMFiles.write(PEMFiles.pem(impostor.privateKey), to: dir.file("api.key"))
    let client = try MeshTLS(material: try pki.workload(web), trustAnchors: [pki.anchor.certificate])

    let port = try await MeshTLSEcho.freePort()
    let server = try BackgroundProcess(
      "openssl",
      [
        "s_server", "-accept", "127.0.0.1:\(port)", "-cert", dir.file("api.crt"), "-key", dir.file("api.key"),
        "-cert_chain", dir.file("chain.crt"), "-CAfile", dir.file("ca.crt"), "-Verify", "1", "-tls1_3",
        "-alpn", "\(MeshTLS.ALPN.transport),h2",
      ])
    defer { server.terminate() }
    try await server.waitForOutput(containing: "ACCEPT")

    await #expect {
      try await MeshTLSEcho.withConnection(tls: client, port: port, expected: backend)
    } throws: { error in
      let error = try #require(error as? MeshTLSError)
      return error.kind == .identityMismatch && error.message.contains("expected \(backend)")
        && error.message.contains("api.default.serviceaccount")
    }

    let session = try await MeshTLSEcho.withConnection(tls: client, port: port, expected: .test("api")) { s, _, _ in s }
    #expect(session.peerIdentity == .test("api"))
    #expect(session.negotiatedProtocol == MeshTLS.ALPN.transport)
    // s_server saw our client certificate.
    try await server.waitForOutput(containing: "web.default.serviceaccount")
  }

  @Test("plaintext HTTP to a mesh TLS port fails cleanly as not-TLS and the server keeps serving")
  func plaintext() async throws {
    let pki = try TestPKI()
    let server = try MeshTLS(material: try pki.workload(backend), trustAnchors: [pki.anchor.certificate])
    let client = try MeshTLS(material: try pki.workload(web), trustAnchors: [pki.anchor.certificate])
    let log = SessionLog()
    try await MeshTLSEcho.withServer(tls: server, onSession: log.record) { port in
      let curl = try await Subprocess.run("curl", ["-s", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:\(port)/"])
      #expect(curl.stdout != "200")
      let session = try await MeshTLSEcho.withConnection(tls: client, port: port, expected: backend) { s, _, _ in s }
      #expect(session.peerIdentity == backend)
    }
    let sessions = try await log.wait(for: 2)
    #expect(throws: MeshTLSError(.notTLS, "")) { try sessions[0].get() }
    #expect(try sessions[1].get().peerIdentity == web)
  }

  @Test("an expired leaf is refused on both sides")
  func expired() async throws {
    let longAgo = Date().addingTimeInterval(-3 * 24 * 3600)
    let pki = try TestPKI(now: longAgo.addingTimeInterval(-3600))
    let expiredServer = try MeshTLS(
      material: try pki.workload(backend, now: longAgo), trustAnchors: [pki.anchor.certificate])
    let client = try MeshTLS(material: try pki.workload(web), trustAnchors: [pki.anchor.certificate])
    try await MeshTLSEcho.withServer(tls: expiredServer) { port in
      await #expect(throws: MeshTLSError(.expired, "")) {
        try await MeshTLSEcho.withConnection(tls: client, port: port, expected: backend)
      }
    }

    let server = try MeshTLS(material: try pki.workload(backend), trustAnchors: [pki.anchor.certificate])
    let expiredClient = try MeshTLS(material: try pki.workload(web, now: longAgo), trustAnchors: [pki.anchor.certificate])
    let log = SessionLog()
    try await MeshTLSEcho.withServer(tls: server, onSession: log.record) { port in
      await #expect(throws: (any Error).self) {
        try await MeshTLSEcho.withConnection(tls: expiredClient, port: port, expected: backend) { _, inbound, _ in
          // TLS 1.3: the client may finish before the server refuses it; the refusal then ends the stream.
          var iterator = inbound.makeAsyncIterator()
          let line = try await readLine(&iterator)
          if !line.contains("identity=") { throw TestFailure("refused") }
        }
      }
    }
    let sessions = try await log.wait(for: 1)
    #expect(throws: MeshTLSError(.expired, "")) { try sessions[0].get() }
  }

  @Test("a client without a certificate is refused where one is required and anonymous where optional")
  func clientCertificateRequirement() async throws {
    let pki = try TestPKI()
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    try pki.write(to: dir.path)
    let server = try MeshTLS(material: try pki.workload(backend), trustAnchors: [pki.anchor.certificate])
    for required in [true, false] {
      let log = SessionLog()
      try await MeshTLSEcho.withServer(tls: server, requireClientCertificate: required, onSession: log.record) { port in
        _ = try await Subprocess.run(
          "openssl",
          ["s_client", "-connect", "127.0.0.1:\(port)", "-CAfile", dir.file("ca.crt"), "-tls1_3", "-ign_eof", "-quiet"],
          input: Data("quit\n".utf8))
      }
      let sessions = try await log.wait(for: 1)
      if required {
        #expect(throws: MeshTLSError(.noClientCertificate, "")) { try sessions[0].get() }
      } else {
        #expect(try sessions[0].get().peerIdentity == nil)
      }
    }
  }

  @Test("rotation: an open connection keeps working; a new one sees the new certificate")
  func rotation() async throws {
    let pki = try TestPKI()
    let first = try pki.workload(backend)
    let server = try MeshTLS(material: first, trustAnchors: [pki.anchor.certificate])
    let client = try MeshTLS(material: try pki.workload(web), trustAnchors: [pki.anchor.certificate])
    try await MeshTLSEcho.withServer(tls: server) { port in
      try await MeshTLSEcho.withConnection(tls: client, port: port, expected: backend) { before, inbound, outbound in
        #expect(before.peerCertificate?.serialNumber == first.leaf.serialNumber)
        var iterator = inbound.makeAsyncIterator()
        #expect(try await readLine(&iterator).contains("identity=\(web)"))

        let second = try pki.workload(backend)
        try server.rotate(to: second)

        try await outbound.write(ByteBuffer(string: "still here\n"))
        #expect(try await readLine(&iterator).contains("still here"))

        let after = try await MeshTLSEcho.withConnection(tls: client, port: port, expected: backend) { s, _, _ in s }
        #expect(after.peerCertificate?.serialNumber == second.leaf.serialNumber)
        #expect(after.peerCertificate?.serialNumber != before.peerCertificate?.serialNumber)
      }
    }
  }

  @Test("a trust bundle with two anchors accepts peers of both; dropping one refuses its peers")
  func twoAnchors() async throws {
    let old = try TestPKI()
    let new = try TestPKI()
    let server = try MeshTLS(
      material: try new.workload(backend), trustAnchors: [old.anchor.certificate, new.anchor.certificate])
    let oldClient = try MeshTLS(
      material: try old.workload(web), trustAnchors: [old.anchor.certificate, new.anchor.certificate])
    let log = SessionLog()
    try await MeshTLSEcho.withServer(tls: server, onSession: log.record) { port in
      let session = try await MeshTLSEcho.withConnection(tls: oldClient, port: port, expected: backend) { s, _, _ in s }
      #expect(session.peerIdentity == backend)
      _ = try await log.wait(for: 1)

      try server.setTrustAnchors([new.anchor.certificate])
      try? await MeshTLSEcho.withConnection(tls: oldClient, port: port, expected: backend) { _, inbound, _ in
        for try await _ in inbound {}
      }
      let sessions = try await log.wait(for: 2)
      #expect(throws: MeshTLSError(.untrustedChain, "")) { try sessions[1].get() }
    }
  }
}
