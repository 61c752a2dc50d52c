import Foundation
import Testing

@testable import MeshProxy

/// The proxy's memory trimmer gives back what malloc holds free between live allocations, which glibc keeps on
/// its own (only an arena's top is returned by `free`).
@Suite("Memory trimmer", .serialized)
struct MemoryTrimmerTests {
  /// Anonymous resident memory of this process, KB (`/proc/self/smaps_rollup`).
  private func anonymousKB() throws -> Int {
    let text = try String(contentsOfFile: "/proc/self/smaps_rollup", encoding: .utf8)
    let line = try #require(text.split(separator: "\n").first { $0.hasPrefix("Anonymous:") })
    return try #require(Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]))
  }

  @Test("64 MB freed between live blocks: kept by malloc until the trimmer gives it back")
  func freedMemoryGoesBack() throws {
    #if os(Linux)
    // 131,072 blocks of 512 bytes; every 64th stays allocated, so the freed ones cannot merge into an arena's
    // top, where free() would return them itself.
    let count = 131_072
    var blocks: [UnsafeMutableRawPointer] = []
    blocks.reserveCapacity(count)
    for _ in 0..<count {
      let block = UnsafeMutableRawPointer.allocate(byteCount: 512, alignment: 16)
      block.initializeMemory(as: UInt8.self, repeating: 1, count: 512)  // resident, not just reserved
      blocks.append(block)
    }
    var kept: [UnsafeMutableRawPointer] = []
    for (index, block) in blocks.enumerated() {
      if index % 64 == 0 { kept.append(block) } else { block.deallocate() }
    }
    blocks = []
    defer { for block in kept { block.deallocate() } }

    #expect(MemoryTrimmer.freeBytes > 40 << 20, "malloc should hold the freed blocks: \(MemoryTrimmer.freeBytes) free")
    let before = try anonymousKB()
    // Under the threshold nothing happens.
    #expect(MemoryTrimmer(threshold: Int.max).trimIfWorthIt() == nil)
    let released = try #require(MemoryTrimmer(threshold: 4 << 20).trimIfWorthIt())
    let after = try anonymousKB()
    print("memory trimmer: \(released >> 20) MB free in malloc; anonymous \(before / 1024) -> \(after / 1024) MB")
    #expect(released > 40 << 20)
    #expect(before - after > 32 * 1024, "anonymous memory \(before) KB -> \(after) KB")
    #else
    #expect(MemoryTrimmer(threshold: 0).trimIfWorthIt() == nil)
    #endif
  }

  @Test("the proxy trims every 10 s by default, above 4 MiB free")
  func defaults() {
    let configuration = ProxyConfiguration()
    #expect(configuration.memoryTrimInterval == .seconds(10))
    #expect(configuration.memoryTrimThreshold == 4 << 20)
  }
}
