import Foundation
@testable import MeshProxy
import NIOCore
import NIOHPACK
import NIOHTTP2
import Testing
import _MeshTestSupport

/// The proxy's HTTP/2 frame reader: frames of every type written by python's `hyperframe` (python-h2's frame
/// layer) and read back whatever way the bytes are cut, and RFC 9113's rules for a frame's size, stream and
/// values, each broken once.
@Suite("HTTP/2 frame reader")
struct HTTP2FrameReaderTests {
  private static func bytes(_ hex: String) -> ByteBuffer { ByteBuffer(bytes: hexBytes(hex)) }

  /// Reads every frame of `input`, given to the reader `chunk` bytes at a time.
  private static func frames(_ input: ByteBuffer, chunk: Int, reader: inout HTTP2FrameReader) throws(HTTP2WireError)
    -> [(frame: HTTP2Frame, flowControlledLength: Int)]
  {
    var input = input
    var frames: [(frame: HTTP2Frame, flowControlledLength: Int)] = []
    while input.readableBytes > 0 {
      reader.append(input.readSlice(length: min(chunk, input.readableBytes))!)
      while let frame = try reader.nextFrame() { frames.append(frame) }
    }
    return frames
  }

  @Test("every frame type hyperframe writes is read, whole or a few bytes at a time", arguments: [1, 7, 64, 100_000])
  func hyperframeWrites(chunk: Int) async throws {
    let script = """
      import hpack, sys
      import hyperframe.frame as f
      out = []
      s = f.SettingsFrame(0, settings={1: 4096, 3: 100, 4: 1048576, 5: 16384, 0x99: 7}); out.append(s)
      a = f.SettingsFrame(0); a.flags.add('ACK'); out.append(a)
      p = f.PingFrame(0); p.opaque_data = bytes(range(1, 9)); out.append(p)
      q = f.PingFrame(0); q.opaque_data = bytes(8); q.flags.add('ACK'); out.append(q)
      enc = hpack.Encoder()
      h = f.HeadersFrame(1); h.data = enc.encode([(':method', 'GET'), (':path', '/a')])
      h.flags.add('END_HEADERS'); h.flags.add('PRIORITY'); h.exclusive = True; h.depends_on = 0; h.stream_weight = 15; out.append(h)
      block = enc.encode([(':method', 'POST'), (':path', '/b'), ('x-long', 'v' * 300)])
      h3 = f.HeadersFrame(3); h3.data = block[:10]; h3.flags.add('PADDED'); h3.pad_length = 4; out.append(h3)
      c1 = f.ContinuationFrame(3); c1.data = block[10:200]; out.append(c1)
      c2 = f.ContinuationFrame(3); c2.data = block[200:]; c2.flags.add('END_HEADERS'); out.append(c2)
      d = f.DataFrame(1); d.data = b'hello'; d.flags.add('PADDED'); d.flags.add('END_STREAM'); d.pad_length = 10; out.append(d)
      class Raw:  # a frame of type 0xfa, unknown (hyperframe's ExtensionFrame writes its length as 0)
          def serialize(self): return bytes.fromhex('000007fa0000000000') + b'skipped'
      out.append(Raw())
      out.append(f.WindowUpdateFrame(0, window_increment=1000))
      out.append(f.WindowUpdateFrame(1, window_increment=5))
      r = f.RstStreamFrame(3); r.error_code = 8; out.append(r)
      pr = f.PriorityFrame(5); pr.depends_on = 3; pr.stream_weight = 200; out.append(pr)
      g = f.GoAwayFrame(0); g.last_stream_id = 3; g.error_code = 11; g.additional_data = b'bye'; out.append(g)
      sys.stdout.write(b''.join(x.serialize() for x in out).hex())
      """
    let out = try await Subprocess.run("/usr/bin/python3", ["-c", script])
    try #require(out.status == 0, "\(out)")
    var reader = HTTP2FrameReader()
    let frames = try Self.frames(Self.bytes(out.stdout), chunk: chunk, reader: &reader)
    // Twelve: the frame of an unknown type is skipped.
    try #require(frames.count == 12, "\(frames.map(\.frame.payload))")

    guard case .settings(.settings(let settings)) = frames[0].frame.payload else { Issue.record("\(frames[0])"); return }
    #expect(settings.map(\.value).sorted() == [7, 100, 4096, 16384, 1_048_576])
    #expect(settings.contains { $0.parameter == .initialWindowSize && $0.value == 1_048_576 })
    #expect(settings.contains { $0.parameter == HTTP2SettingsParameter(extensionSetting: 0x99) && $0.value == 7 })
    guard case .settings(.ack) = frames[1].frame.payload else { Issue.record("\(frames[1])"); return }
    guard case .ping(let ping, ack: false) = frames[2].frame.payload else { Issue.record("\(frames[2])"); return }
    #expect(ping == HTTP2PingData(withTuple: (1, 2, 3, 4, 5, 6, 7, 8)))
    guard case .ping(_, ack: true) = frames[3].frame.payload else { Issue.record("\(frames[3])"); return }

    guard case .headers(let first) = frames[4].frame.payload else { Issue.record("\(frames[4])"); return }
    #expect(frames[4].frame.streamID == 1)
    #expect(first.headers.map(\.value) == ["GET", "/a"])
    #expect(first.priorityData == HTTP2Frame.StreamPriorityData(exclusive: true, dependency: .rootStream, weight: 15))
    #expect(!first.endStream)
    guard case .headers(let continued) = frames[5].frame.payload else { Issue.record("\(frames[5])"); return }
    #expect(frames[5].frame.streamID == 3)
    #expect(continued.headers.map(\.name) == [":method", ":path", "x-long"])
    #expect(continued.headers.first(name: "x-long") == String(repeating: "v", count: 300))
    #expect(continued.paddingBytes == 4)

    guard case .data(let data) = frames[6].frame.payload else { Issue.record("\(frames[6])"); return }
    #expect(data.endStream && data.paddingBytes == 10)
    guard case .byteBuffer(let body) = data.data else { Issue.record("\(data.data)"); return }
    #expect(String(buffer: body) == "hello")
    // Flow control counts the whole payload: the pad length byte, the data and the padding.
    #expect(frames[6].flowControlledLength == 1 + 5 + 10)

    guard case .windowUpdate(windowSizeIncrement: 1000) = frames[7].frame.payload, frames[7].frame.streamID == .rootStream else {
      Issue.record("\(frames[7])"); return
    }
    guard case .windowUpdate(windowSizeIncrement: 5) = frames[8].frame.payload, frames[8].frame.streamID == 1 else {
      Issue.record("\(frames[8])"); return
    }
    guard case .rstStream(.cancel) = frames[9].frame.payload, frames[9].frame.streamID == 3 else {
      Issue.record("\(frames[9])"); return
    }
    guard case .priority(let priority) = frames[10].frame.payload else { Issue.record("\(frames[10])"); return }
    #expect(priority == HTTP2Frame.StreamPriorityData(exclusive: false, dependency: 3, weight: 200))
    guard case .goAway(lastStreamID: let last, errorCode: .enhanceYourCalm, opaqueData: let debug) = frames[11].frame.payload
    else {
      Issue.record("\(frames[11])"); return
    }
    #expect(last == 3)
    #expect(debug.map { String(buffer: $0) } == "bye")
    #expect(frames.enumerated().allSatisfy { $0.offset == 6 || $0.element.flowControlledLength == 0 })
  }

  /// Each row: bytes after the preface, and the error they are (nil stream: a connection error).
  static let broken: [(String, String, HTTP2ErrorCode, HTTP2StreamID?)] = [
    ("a frame above the announced size", "004001 00 00 00000001" + String(repeating: "00", count: 16385), .frameSizeError, nil),
    ("DATA on stream 0", "000001 00 00 00000000 61", .protocolError, nil),
    ("HEADERS on stream 0", "000001 01 04 00000000 82", .protocolError, nil),
    ("padding as long as the frame", "000003 00 08 00000001 05 6162", .protocolError, nil),
    ("SETTINGS on a stream", "000000 04 00 00000001", .protocolError, nil),
    ("SETTINGS of 5 bytes", "000005 04 00 00000000 0001000010", .frameSizeError, nil),
    ("a SETTINGS acknowledgement with a body", "000006 04 01 00000000 000100001000", .frameSizeError, nil),
    ("SETTINGS_ENABLE_PUSH of 2", "000006 04 00 00000000 000200000002", .protocolError, nil),
    ("SETTINGS_INITIAL_WINDOW_SIZE of 2^31", "000006 04 00 00000000 000480000000", .flowControlError, nil),
    ("SETTINGS_MAX_FRAME_SIZE of 100", "000006 04 00 00000000 000500000064", .protocolError, nil),
    ("PING of 7 bytes", "000007 06 00 00000000 01020304050607", .frameSizeError, nil),
    ("PING on a stream", "000008 06 00 00000001 0102030405060708", .protocolError, nil),
    ("GOAWAY of 4 bytes", "000004 07 00 00000000 00000001", .frameSizeError, nil),
    ("WINDOW_UPDATE of 0 on the connection", "000004 08 00 00000000 00000000", .protocolError, nil),
    ("WINDOW_UPDATE of 0 on a stream", "000004 08 00 00000003 00000000", .protocolError, 3),
    ("WINDOW_UPDATE of 3 bytes", "000003 08 00 00000000 000001", .frameSizeError, nil),
    ("RST_STREAM of 3 bytes", "000003 03 00 00000001 000008", .frameSizeError, nil),
    ("PRIORITY of 4 bytes", "000004 02 00 00000005 00000003", .frameSizeError, 5),
    ("PUSH_PROMISE", "000005 05 04 00000001 00000002 82", .protocolError, nil),
    ("CONTINUATION with no header block", "000001 09 04 00000001 82", .protocolError, nil),
    ("a frame between HEADERS and CONTINUATION", "000001 01 00 00000001 82 000000 00 01 00000001", .protocolError, nil),
    ("CONTINUATION on another stream", "000001 01 00 00000001 82 000001 09 04 00000003 86", .protocolError, nil),
    ("a header block that cannot be decoded", "000001 01 04 00000001 bf", .compressionError, nil),
  ]

  @Test("a frame that breaks RFC 9113 is the error the RFC names", arguments: 0..<broken.count)
  func brokenFrames(row: Int) {
    let (what, hex, code, stream) = Self.broken[row]
    var reader = HTTP2FrameReader()
    do {
      let frames = try Self.frames(Self.bytes(hex), chunk: 100_000, reader: &reader)
      Issue.record("\(what): read as \(frames.map(\.frame.payload)), not an error")
    } catch {
      #expect(error.code == code, "\(what): \(error)")
      #expect(error.stream == stream, "\(what): \(error)")
    }
  }

  /// HEADERS without END_HEADERS, then CONTINUATION frames that never end it (CVE-2024-27316): the reader
  /// stops at the block's limit instead of holding every byte.
  @Test("a header block that never ends stops at its limit")
  func continuationFlood() {
    var reader = HTTP2FrameReader()
    reader.maxHeaderBlockSize = 4096
    var input = Self.bytes("000001 01 00 00000001 82")
    let fragment = Self.bytes("000400 09 00 00000001" + String(repeating: "41", count: 1024))
    var thrown: HTTP2WireError?
    for _ in 0..<10 where thrown == nil {
      input.writeImmutableBuffer(fragment)
      do {
        reader.append(input)
        input.clear()
        while try reader.nextFrame() != nil { Issue.record("a frame came out of an unfinished block") }
      } catch {
        thrown = error
      }
    }
    #expect(thrown?.code == .enhanceYourCalm)
    #expect(thrown?.stream == nil)
  }
}
