@testable import MeshProxy
import NIOCore
import NIOHPACK
import NIOHTTP2
import Testing

/// Send-side flow control of the proxy's own HTTP/2 connection code (RFC 9113, section 6.9).
@Suite("HTTP/2 send windows")
struct HTTP2SendWindowsTests {
  static func data(_ count: Int, endStream: Bool = false) -> HTTP2Frame.FramePayload {
    .data(.init(data: .byteBuffer(ByteBuffer(repeating: 0x61, count: count)), endStream: endStream))
  }

  /// Every frame `next` gives now: stream, DATA length (or -1 for another frame), tag.
  static func drain(_ windows: inout HTTP2SendWindows<Int>, maxFrameSize: Int = 16384) -> [(Int32, Int, Int?)] {
    var out: [(Int32, Int, Int?)] = []
    while let (id, payload, tag) = windows.next(maxFrameSize: maxFrameSize) {
      if case .data(let data) = payload {
        out.append((Int32(id), data.data.readableBytes, tag))
      } else {
        out.append((Int32(id), -1, tag))
      }
    }
    return out
  }

  /// Stream 1 open, and 60,000 bytes of DATA sent on it at once (within both windows of 65,535).
  static func streamOneAfter60000() -> HTTP2SendWindows<Int> {
    var windows = HTTP2SendWindows<Int>()
    windows.open(1)
    let goesNow = windows.sendNow(Self.data(60000), on: 1, maxFrameSize: 100_000)
    #expect(goesNow)
    return windows
  }

  @Test("DATA within both windows goes at once; beyond them it waits, is cut to the room a WINDOW_UPDATE gives, and its tag comes with the last part")
  func waitsForWindow() throws {
    var windows = Self.streamOneAfter60000()
    #expect(windows.connectionWindow == 5535)
    let moreWaits = !windows.sendNow(Self.data(10000), on: 1, maxFrameSize: 100_000)
    #expect(moreWaits)
    let moreKept = windows.enqueue(Self.data(10000), tag: 7, on: 1)
    #expect(moreKept)
    // The windows hold 5,535 more bytes: the first part goes, without the tag.
    #expect(Self.drain(&windows, maxFrameSize: 100_000).map { [$0.0, Int32($0.1)] } == [[1, 5535]])
    #expect(Self.drain(&windows).isEmpty)
    try windows.windowUpdate(10000, on: .rootStream)
    // The stream's window is still empty.
    #expect(Self.drain(&windows).isEmpty)
    try windows.windowUpdate(3000, on: 1)
    #expect(Self.drain(&windows).map { [$0.0, Int32($0.1)] } == [[1, 3000]])
    try windows.windowUpdate(3000, on: 1)
    let last = Self.drain(&windows)
    #expect(last.map { [$0.0, Int32($0.1)] } == [[1, 1465]])
    #expect(last.first?.2 == 7)
    #expect(!windows.hasWaiting)
  }

  @Test("DATA longer than the peer's frame size leaves in frames of that size")
  func cutToFrameSize() {
    var windows = HTTP2SendWindows<Int>()
    windows.open(3)
    let longWaits = !windows.sendNow(Self.data(40000, endStream: true), on: 3, maxFrameSize: 16384)
    #expect(longWaits)
    let longKept = windows.enqueue(Self.data(40000, endStream: true), tag: 1, on: 3)
    #expect(longKept)
    var sizes: [Int] = []
    var ends: [Bool] = []
    while let (_, payload, _) = windows.next(maxFrameSize: 16384) {
      guard case .data(let data) = payload else { continue }
      sizes.append(data.data.readableBytes)
      ends.append(data.endStream)
    }
    #expect(sizes == [16384, 16384, 7232])
    #expect(ends == [false, false, true])
  }

  @Test("trailers written behind waiting DATA wait behind it; frames of another stream go at once")
  func framesWaitBehindData() throws {
    var windows = HTTP2SendWindows<Int>()
    windows.open(1)
    windows.open(3)
    try windows.setInitialWindow(100)
    let dataWaits = !windows.sendNow(Self.data(150), on: 1, maxFrameSize: 16384)
    #expect(dataWaits)
    let dataKept = windows.enqueue(Self.data(150), tag: 1, on: 1)
    #expect(dataKept)
    let trailers = HTTP2Frame.FramePayload.headers(.init(headers: ["grpc-status": "0"], endStream: true))
    let trailersWait = !windows.sendNow(trailers, on: 1, maxFrameSize: 16384)
    #expect(trailersWait)
    let trailersKept = windows.enqueue(trailers, tag: 2, on: 1)
    #expect(trailersKept)
    let otherStreamGoesNow = windows.sendNow(trailers, on: 3, maxFrameSize: 16384)
    #expect(otherStreamGoesNow)
    #expect(Self.drain(&windows).map { [$0.0, Int32($0.1)] } == [[1, 100]])
    try windows.windowUpdate(50, on: 1)
    let rest = Self.drain(&windows)
    #expect(rest.map { [$0.0, Int32($0.1)] } == [[1, 50], [1, -1]])
    #expect(rest.map(\.2) == [1, 2])
  }

  @Test("streams with DATA waiting take turns, one frame each")
  func turns() throws {
    var windows = HTTP2SendWindows<Int>()
    for id in [1, 3, 5] as [HTTP2StreamID] {
      windows.open(id)
      let kept = windows.enqueue(Self.data(20000), tag: nil, on: id)
      #expect(kept)
    }
    try windows.windowUpdate(1_000_000, on: .rootStream)
    try windows.setInitialWindow(1_000_000)
    let order = Self.drain(&windows, maxFrameSize: 10000).map(\.0)
    #expect(order == [1, 3, 5, 1, 3, 5])
  }

  @Test("SETTINGS_INITIAL_WINDOW_SIZE moves every open stream's window, below zero too; above 2^31-1 is a connection error")
  func initialWindow() throws {
    var windows = Self.streamOneAfter60000()
    try windows.setInitialWindow(1000)
    #expect(windows.window(of: 1) == 1000 - 60000)
    windows.open(3)
    #expect(windows.window(of: 3) == 1000)
    try windows.windowUpdate(HTTP2SendWindows<Int>.maxWindow - 1000, on: 3)
    #expect(throws: HTTP2WireError.connection(.flowControlError, "SETTINGS_INITIAL_WINDOW_SIZE 1001 pushes a stream's window above 2^31-1")) {
      try windows.setInitialWindow(1001)
    }
  }

  @Test("a WINDOW_UPDATE past 2^31-1: a connection error on stream 0, a stream error on a stream; one for a closed stream is ignored")
  func windowOverflow() throws {
    var windows = HTTP2SendWindows<Int>()
    windows.open(1)
    #expect(throws: HTTP2WireError.self) { try windows.windowUpdate(HTTP2SendWindows<Int>.maxWindow, on: .rootStream) }
    do {
      try windows.windowUpdate(HTTP2SendWindows<Int>.maxWindow, on: 1)
      Issue.record("no error")
    } catch {
      #expect(error.stream == 1)
      #expect(error.code == .flowControlError)
    }
    try windows.windowUpdate(HTTP2SendWindows<Int>.maxWindow, on: 9)
  }

  @Test("a stream's close gives back the tags of what still waits, and its turn goes")
  func close() throws {
    var windows = HTTP2SendWindows<Int>()
    windows.open(1)
    windows.open(3)
    try windows.setInitialWindow(0)
    let dataKept = windows.enqueue(Self.data(10), tag: 1, on: 1)
    #expect(dataKept)
    let trailersKept = windows.enqueue(.headers(.init(headers: [:], endStream: true)), tag: 2, on: 1)
    #expect(trailersKept)
    let otherKept = windows.enqueue(Self.data(10), tag: 3, on: 3)
    #expect(otherKept)
    let tagsBack = windows.close(1) == [1, 2]
    #expect(tagsBack)
    let refused = !windows.enqueue(Self.data(1), tag: 4, on: 1)
    #expect(refused)
    let tagsLeft = windows.closeAll() == [3]
    #expect(tagsLeft)
    #expect(!windows.hasWaiting)
  }
}
