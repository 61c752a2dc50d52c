import Foundation
@testable import MeshProxy
import NIOCore
import NIOHPACK
import NIOHTTP2
import Testing
import _MeshTestSupport

/// The proxy's HTTP/2 frame writer: what it writes, read by python's `hyperframe` and `hpack` (python-h2's frame
/// and header layers), and by the proxy's own reader.
@Suite("HTTP/2 frame writer")
struct HTTP2FrameWriterTests {
  /// One frame of each type this side sends, a header block larger than a frame among them.
  static func frames() -> [HTTP2Frame] {
    let large = String(repeating: "x", count: 40_000)
    return [
      HTTP2Frame(
        streamID: .rootStream,
        payload: .settings(.settings([
          HTTP2Setting(parameter: .headerTableSize, value: 1024), HTTP2Setting(parameter: .maxConcurrentStreams, value: 250),
          HTTP2Setting(parameter: .initialWindowSize, value: 1_048_576), HTTP2Setting(parameter: .enableConnectProtocol, value: 1),
        ]))),
      HTTP2Frame(streamID: .rootStream, payload: .settings(.ack)),
      HTTP2Frame(streamID: .rootStream, payload: .ping(HTTP2PingData(withInteger: 0x0102_0304_0506_0708), ack: true)),
      HTTP2Frame(
        streamID: 1,
        payload: .headers(
          .init(headers: [":method": "GET", ":path": "/a", ":scheme": "https", ":authority": "backend"], endStream: true))),
      HTTP2Frame(
        streamID: 3,
        payload: .headers(
          .init(
            headers: [":method": "POST", ":path": "/b", "x-large": large],
            priorityData: .init(exclusive: true, dependency: 1, weight: 42), paddingBytes: 7))),
      HTTP2Frame(streamID: 3, payload: .data(.init(data: .byteBuffer(ByteBuffer(string: "hello")), endStream: true, paddingBytes: 3))),
      HTTP2Frame(streamID: 5, payload: .data(.init(data: .byteBuffer(ByteBuffer(string: "plain"))))),
      HTTP2Frame(streamID: 5, payload: .priority(.init(exclusive: false, dependency: 3, weight: 9))),
      HTTP2Frame(streamID: 5, payload: .rstStream(.refusedStream)),
      HTTP2Frame(streamID: 0, payload: .windowUpdate(windowSizeIncrement: 65_535)),
      HTTP2Frame(streamID: 7, payload: .windowUpdate(windowSizeIncrement: 1)),
      HTTP2Frame(
        streamID: .rootStream,
        payload: .goAway(lastStreamID: 5, errorCode: .enhanceYourCalm, opaqueData: ByteBuffer(string: "too many"))),
    ]
  }

  @Test("hyperframe and hpack read every frame and header block written, CONTINUATION frames included")
  func pythonReads() async throws {
    var writer = HTTP2FrameWriter()
    var buffer = ByteBuffer()
    for frame in Self.frames() { try writer.write(frame, into: &buffer) }
    let script = """
      import sys, hpack
      import hyperframe.frame as f
      data = bytes.fromhex(sys.stdin.read().strip())
      decoder = hpack.Decoder(); decoder.max_header_list_size = 1 << 20
      block = b''
      while data:
          frame, length = f.Frame.parse_frame_header(memoryview(data[:9]))
          frame.parse_body(memoryview(data[9:9 + length]))
          data = data[9 + length:]
          line = [type(frame).__name__, frame.stream_id, ','.join(sorted(frame.flags))]
          if isinstance(frame, (f.HeadersFrame, f.ContinuationFrame)):
              block += frame.data
              if isinstance(frame, f.HeadersFrame):
                  line += [frame.depends_on, frame.stream_weight, int(frame.exclusive), frame.pad_length]
              if 'END_HEADERS' in frame.flags:
                  line += ['%s=%d' % (n, len(v)) if len(v) > 50 else '%s=%s' % (n, v) for n, v in decoder.decode(block)]
                  block = b''
          elif isinstance(frame, f.DataFrame): line += [frame.data.decode(), frame.pad_length]
          elif isinstance(frame, f.SettingsFrame): line += sorted('%d=%d' % kv for kv in frame.settings.items())
          elif isinstance(frame, f.PingFrame): line += [frame.opaque_data.hex()]
          elif isinstance(frame, f.PriorityFrame): line += [frame.depends_on, frame.stream_weight, int(frame.exclusive)]
          elif isinstance(frame, f.RstStreamFrame): line += [frame.error_code]
          elif isinstance(frame, f.WindowUpdateFrame): line += [frame.window_increment]
          elif isinstance(frame, f.GoAwayFrame): line += [frame.last_stream_id, frame.error_code, frame.additional_data.decode()]
          print(' '.join(str(x) for x in line))
      """
    let hex = buffer.readableBytesView.map { String(format: "%02x", $0) }.joined()
    let out = try await Subprocess.run("/usr/bin/python3", ["-c", script], input: Data(hex.utf8))
    try #require(out.status == 0, "\(out)")
    #expect(
      out.stdout.split(separator: "\n").map(String.init) == [
        "SettingsFrame 0  1=1024 3=250 4=1048576 8=1",
        "SettingsFrame 0 ACK",
        "PingFrame 0 ACK 0102030405060708",
        "HeadersFrame 1 END_HEADERS,END_STREAM 0 0 0 0 :method=GET :path=/a :scheme=https :authority=backend",
        "HeadersFrame 3 PADDED,PRIORITY 1 42 1 7",
        "ContinuationFrame 3 ",
        "ContinuationFrame 3 END_HEADERS :method=POST :path=/b x-large=40000",
        "DataFrame 3 END_STREAM,PADDED hello 3",
        "DataFrame 5  plain 0",
        "PriorityFrame 5  3 9 0",
        "RstStreamFrame 5  7",
        "WindowUpdateFrame 0  65535",
        "WindowUpdateFrame 7  1",
        "GoAwayFrame 0  5 11 too many",
      ])
  }

  @Test("the proxy's reader reads back what its writer wrote")
  func roundTrip() throws {
    var writer = HTTP2FrameWriter()
    var reader = HTTP2FrameReader(maxHeaderListSize: 1 << 20)
    var buffer = ByteBuffer()
    let frames = Self.frames()
    for frame in frames { try writer.write(frame, into: &buffer) }
    reader.append(buffer)
    var read: [HTTP2Frame] = []
    while let frame = try reader.nextFrame() { read.append(frame.frame) }
    try #require(read.count == frames.count)
    for (got, sent) in zip(read, frames) {
      #expect(got.streamID == sent.streamID)
      switch (got.payload, sent.payload) {
      case (.headers(let got), .headers(let sent)):
        #expect(got.headers == sent.headers)
        #expect(got.endStream == sent.endStream && got.priorityData == sent.priorityData)
        #expect(got.paddingBytes == sent.paddingBytes)
      case (.data(let got), .data(let sent)):
        #expect(got.data == sent.data && got.endStream == sent.endStream && got.paddingBytes == sent.paddingBytes)
      case (.settings(.settings(let got)), .settings(.settings(let sent))): #expect(got == sent)
      case (.settings(.ack), .settings(.ack)): break
      case (.ping(let got, let gotAck), .ping(let sent, let sentAck)): #expect(got == sent && gotAck == sentAck)
      case (.priority(let got), .priority(let sent)): #expect(got == sent)
      case (.rstStream(let got), .rstStream(let sent)): #expect(got == sent)
      case (.windowUpdate(let got), .windowUpdate(let sent)): #expect(got == sent)
      case (.goAway(let gotLast, let gotCode, let gotData), .goAway(let sentLast, let sentCode, let sentData)):
        #expect(gotLast == sentLast && gotCode == sentCode && gotData == sentData)
      default: Issue.record("read \(got.payload), wrote \(sent.payload)")
      }
    }
  }
}
