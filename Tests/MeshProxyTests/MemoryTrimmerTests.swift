import Foundation
import Logging
import MeshCore
import Testing

@testable import MeshProxy

/// The proxy's memory trimmer gives back what malloc holds free between live allocations, which glibc keeps on
/// its own (only an arena's top is returned by `free`).
@Suite("Memory trimmer", .serialized)
struct MemoryTrimmerTests {
  /// Anonymous resident memory of this process, KB (`/proc/self/smaps_rollup`).
  private static func anonymousKB() throws -> Int {
    let text = try String(contentsOfFile: "/proc/self/smaps_rollup", encoding: .utf8)
    let line = try #require(text.split(separator: "\n").first { $0.hasPrefix("Anonymous:") })
    return try #require(Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]))
  }

  /// 131,072 blocks of 512 bytes (64 MB), written so that they are resident, not just reserved.
  private static func allocateBlocks() -> [UnsafeMutableRawPointer] {
    let count = 131_072
    var blocks: [UnsafeMutableRawPointer] = []
    blocks.reserveCapacity(count)
    for _ in 0..<count {
      let block = UnsafeMutableRawPointer.allocate(byteCount: 512, alignment: 16)
      block.initializeMemory(as: UInt8.self, repeating: 1, count: 512)
      blocks.append(block)
    }
    return blocks
  }

  /// Frees all but every 64th block (returned), so the freed ones cannot merge into an arena's top, where
  /// free() would give them back itself: 63 MB freed between live blocks.
  private static func freeAllButEvery64th(_ blocks: [UnsafeMutableRawPointer]) -> [UnsafeMutableRawPointer] {
    var kept: [UnsafeMutableRawPointer] = []
    for (index, block) in blocks.enumerated() {
      if index % 64 == 0 { kept.append(block) } else { block.deallocate() }
    }
    return kept
  }

  private static func fragmentHeap() -> [UnsafeMutableRawPointer] { freeAllButEvery64th(allocateBlocks()) }

  private static func configuration(trimEvery interval: Duration?) -> ProxyConfiguration {
    .defaults {
      $0.outboundAddress = try! Authority("127.0.0.1:0")
      $0.inboundAddress = try! Authority("127.0.0.1:0")
      $0.adminAddress = try! Authority("127.0.0.1:0")
      $0.memoryTrimInterval = interval
    }
  }

  @Test("64 MB freed between live blocks: kept by malloc until the trimmer gives it back")
  func freedMemoryGoesBack() throws {
    #if os(Linux)
    let kept = Self.fragmentHeap()
    defer { for block in kept { block.deallocate() } }

    #expect(MemoryTrimmer.freeBytes > 40 << 20, "malloc should hold the freed blocks: \(MemoryTrimmer.freeBytes) free")
    let before = try Self.anonymousKB()
    // Under the threshold nothing happens.
    #expect(MemoryTrimmer(threshold: Int.max).trimIfWorthIt() == nil)
    let released = try #require(MemoryTrimmer(threshold: 4 << 20).trimIfWorthIt())
    let after = try Self.anonymousKB()
    print("memory trimmer: \(released >> 20) MB free in malloc; anonymous \(before / 1024) -> \(after / 1024) MB")
    #expect(released > 40 << 20)
    #expect(before - after > 32 * 1024, "anonymous memory \(before) KB -> \(after) KB")
    #else
    #expect(MemoryTrimmer(threshold: 0).trimIfWorthIt() == nil)
    #endif
  }

  @Test("a running proxy trims on its interval: freed memory goes back without anyone calling the trimmer")
  func runningProxyTrims() async throws {
    #if os(Linux)
    let proxy = MeshProxy(
      configuration: Self.configuration(trimEvery: .milliseconds(100)), tls: nil, discovery: InMemoryDiscovery(),
      logger: Logger(label: "test"))
    try await withThrowingTaskGroup { group in
      group.addTask { try await proxy.run() }
      _ = try await proxy.listening
      // Measured with every block live: the proxy's trimmer may run while the blocks are being freed.
      let blocks = Self.allocateBlocks()
      let before = try Self.anonymousKB()
      let kept = Self.freeAllButEvery64th(blocks)
      defer { for block in kept { block.deallocate() } }
      var after = try Self.anonymousKB()
      let deadline = ContinuousClock.now + .seconds(5)
      while before - after <= 32 * 1024 && ContinuousClock.now < deadline {
        try await Task.sleep(for: .milliseconds(50))
        after = try Self.anonymousKB()
      }
      print("proxy's memory trimmer: anonymous \(before / 1024) -> \(after / 1024) MB")
      #expect(before - after > 32 * 1024, "anonymous memory \(before) KB -> \(after) KB within 5 s")
      group.cancelAll()
    }
    #endif
  }

  @Test("a trim interval that is not positive is refused with a clear error, before anything listens")
  func badInterval() async throws {
    for interval: Duration in [.zero, .milliseconds(-5)] {
      let proxy = MeshProxy(
        configuration: Self.configuration(trimEvery: interval), tls: nil, discovery: InMemoryDiscovery(),
        logger: Logger(label: "test"))
      let error = await #expect(throws: MeshError.self) { try await proxy.run() }
      #expect(error?.code == .invalidArgument)
      #expect(error?.description.contains("memoryTrimInterval must be positive") == true, "\(String(describing: error))")
      await #expect(throws: MeshError.self) { try await proxy.listening }
    }
  }
}
