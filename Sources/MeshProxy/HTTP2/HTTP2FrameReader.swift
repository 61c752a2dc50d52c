import NIOCore
import NIOHPACK
import NIOHTTP2

/// What an HTTP/2 peer did wrong, as RFC 9113 section 5.4 sorts it: a connection error (the connection ends
/// with GOAWAY and `code`) or a stream error (`stream` is reset with RST_STREAM and `code`).
struct HTTP2WireError: Error, Equatable, CustomStringConvertible {
  var code: HTTP2ErrorCode
  /// The stream a stream error ends; nil for a connection error.
  var stream: HTTP2StreamID?
  var message: String

  static func connection(_ code: HTTP2ErrorCode, _ message: String) -> Self {
    Self(code: code, stream: nil, message: message)
  }

  static func stream(_ stream: HTTP2StreamID, _ code: HTTP2ErrorCode, _ message: String) -> Self {
    Self(code: code, stream: stream, message: message)
  }

  var description: String {
    "\(stream.map { "stream \($0)" } ?? "connection") error \(code): \(message)"
  }
}

/// Reads HTTP/2 frames (RFC 9113 sections 4 and 6) from a connection's bytes after its preface: the second part
/// of the proxy's own HTTP/2 connection code for mesh hops (``HPACKBlockEncoder`` is the first), which hands
/// the frames on as swift-nio-http2's `HTTP2Frame` values, so that ``HTTP2StreamsHandler`` takes them as it
/// takes `NIOHTTP2Handler`'s.
///
/// It checks what can be checked of a frame alone, and what RFC 9113 says of its size and stream:
/// - a frame longer than the SETTINGS_MAX_FRAME_SIZE this side announced is a connection FRAME_SIZE_ERROR, and
///   so are SETTINGS, PING, WINDOW_UPDATE, RST_STREAM and PRIORITY frames of the wrong length (PRIORITY's is a
///   stream error);
/// - frames that belong to a stream (DATA, HEADERS, PRIORITY, RST_STREAM, CONTINUATION) on stream 0, and
///   connection frames (SETTINGS, PING, GOAWAY) on any other, are a PROTOCOL_ERROR; so is padding as long as
///   the frame, a window increment of 0, and a setting out of its range (a window above 2^31-1 is a
///   FLOW_CONTROL_ERROR);
/// - a header block's CONTINUATION frames come next, on its stream, and nothing else may come between; the
///   block, all its frames together, may take at most ``maxHeaderBlockSize`` bytes (the CONTINUATION flood),
///   and is decoded with ``HPACKBlockDecoder`` (a block it cannot decode is a COMPRESSION_ERROR);
/// - PUSH_PROMISE is a PROTOCOL_ERROR, as this side never enables push; frames of unknown types are skipped.
/// What depends on the streams' states (a frame for a closed stream, flow control) is the connection's to judge.
struct HTTP2FrameReader {
  /// The SETTINGS_MAX_FRAME_SIZE this side announced.
  var maxFrameSize = 16384
  /// The most bytes one header block may take, the fragments of its HEADERS and CONTINUATION frames together.
  var maxHeaderBlockSize = 65536

  private var decoder: HPACKBlockDecoder
  private var bytes = ByteBuffer()
  /// A HEADERS frame without END_HEADERS, while its CONTINUATION frames come.
  private var pending: PendingHeaders?

  private struct PendingHeaders {
    var stream: HTTP2StreamID
    var endStream: Bool
    var priority: HTTP2Frame.StreamPriorityData?
    var padding: Int?
    var block: ByteBuffer
  }

  /// - Parameter maxHeaderListSize: the SETTINGS_MAX_HEADER_LIST_SIZE this side announced (the decoded
  ///   fields' sizes, as section 6.5.2 counts them).
  init(maxHeaderListSize: Int = HPACKDecoder.defaultMaxHeaderListSize) {
    decoder = HPACKBlockDecoder(maxHeaderListSize: maxHeaderListSize)
  }

  /// The size this side lets the peer's encoder use (its own SETTINGS_HEADER_TABLE_SIZE, once acknowledged).
  mutating func allowTableSize(_ size: Int) {
    decoder.allow(tableSize: size)
  }

  /// Bytes read from the connection.
  mutating func append(_ buffer: ByteBuffer) {
    if bytes.readableBytes == 0 {
      bytes = buffer
    } else {
      var buffer = buffer
      bytes.writeBuffer(&buffer)
    }
  }

  /// The next whole frame, and the bytes of it that flow control counts (a DATA frame's whole payload), or nil
  /// until more bytes come.
  mutating func nextFrame() throws(HTTP2WireError) -> (frame: HTTP2Frame, flowControlledLength: Int)? {
    while true {
      // The 9-byte header read in place: length (24 bits) and type, flags, then the stream (31 bits).
      let at = bytes.readerIndex
      guard bytes.readableBytes >= 9, let lengthAndType = bytes.getInteger(at: at, as: UInt32.self),
        let flags = bytes.getInteger(at: at + 4, as: UInt8.self), let streamBits = bytes.getInteger(at: at + 5, as: UInt32.self)
      else { return nil }
      let length = Int(lengthAndType >> 8)
      let type = UInt8(truncatingIfNeeded: lengthAndType)
      let stream = HTTP2StreamID(Int32(bitPattern: streamBits & 0x7FFF_FFFF))
      guard length <= maxFrameSize else {
        throw .connection(.frameSizeError, "a frame of \(length) bytes, above the \(maxFrameSize) announced")
      }
      guard bytes.readableBytes >= 9 + length else { return nil }
      bytes.moveReaderIndex(forwardBy: 9)
      var payload = bytes.readSlice(length: length)!
      // All read: let go of the read's storage. Without this a request through the pair cost each proxy about
      // 10,000 instructions more (Benchmarks/load/instructions.sh), though `append` replaces an empty buffer
      // anyway: holding the storage keeps whoever filled it from reusing it in place.
      if bytes.readableBytes == 0 { bytes.clear() }
      if let pending, type != 0x9 {
        throw .connection(.protocolError, "a frame of type \(type) inside the header block of stream \(pending.stream)")
      }
      if let frame = try read(type: type, flags: flags, stream: stream, payload: &payload, length: length) {
        return frame
      }
    }
  }

  private mutating func read(
    type: UInt8, flags: UInt8, stream: HTTP2StreamID, payload: inout ByteBuffer, length: Int
  ) throws(HTTP2WireError) -> (frame: HTTP2Frame, flowControlledLength: Int)? {
    switch type {
    case 0x0:  // DATA
      try Self.onStream(stream, "DATA")
      let padding = try Self.unpad(&payload, flags: flags, stream: stream)
      let data = HTTP2Frame.FramePayload.Data(data: .byteBuffer(payload), endStream: flags & 0x1 != 0, paddingBytes: padding)
      return (HTTP2Frame(streamID: stream, payload: .data(data)), length)
    case 0x1:  // HEADERS
      try Self.onStream(stream, "HEADERS")
      let padding = try Self.unpad(&payload, flags: flags, stream: stream)
      var priority: HTTP2Frame.StreamPriorityData?
      if flags & 0x20 != 0 {
        guard let read = Self.priority(&payload) else {
          throw .connection(.frameSizeError, "a HEADERS frame too short for its priority")
        }
        priority = read
      }
      guard payload.readableBytes <= maxHeaderBlockSize else { throw blockTooLarge(stream) }
      let headers = PendingHeaders(
        stream: stream, endStream: flags & 0x1 != 0, priority: priority, padding: padding, block: payload)
      if flags & 0x4 == 0 {
        pending = headers
        return nil
      }
      return (try decode(headers), 0)
    case 0x9:  // CONTINUATION
      guard var headers = pending, headers.stream == stream else {
        throw .connection(.protocolError, "a CONTINUATION frame on stream \(stream) that continues no header block")
      }
      guard headers.block.readableBytes + payload.readableBytes <= maxHeaderBlockSize else { throw blockTooLarge(stream) }
      headers.block.writeBuffer(&payload)
      if flags & 0x4 == 0 {
        pending = headers
        return nil
      }
      pending = nil
      return (try decode(headers), 0)
    case 0x2:  // PRIORITY
      try Self.onStream(stream, "PRIORITY")
      guard length == 5, let priority = Self.priority(&payload) else {
        throw .stream(stream, .frameSizeError, "a PRIORITY frame of \(length) bytes, not 5")
      }
      return (HTTP2Frame(streamID: stream, payload: .priority(priority)), 0)
    case 0x3:  // RST_STREAM
      try Self.onStream(stream, "RST_STREAM")
      guard length == 4, let code = payload.readInteger(as: UInt32.self) else {
        throw .connection(.frameSizeError, "a RST_STREAM frame of \(length) bytes, not 4")
      }
      return (HTTP2Frame(streamID: stream, payload: .rstStream(HTTP2ErrorCode(networkCode: Int(code)))), 0)
    case 0x4:  // SETTINGS
      try Self.onConnection(stream, "SETTINGS")
      if flags & 0x1 != 0 {
        guard length == 0 else { throw .connection(.frameSizeError, "a SETTINGS acknowledgement with \(length) bytes") }
        return (HTTP2Frame(streamID: .rootStream, payload: .settings(.ack)), 0)
      }
      guard length % 6 == 0 else { throw .connection(.frameSizeError, "a SETTINGS frame of \(length) bytes") }
      var settings: [HTTP2Setting] = []
      while let id = payload.readInteger(as: UInt16.self), let value = payload.readInteger(as: UInt32.self) {
        try Self.check(setting: id, value: value)
        settings.append(HTTP2Setting(parameter: HTTP2SettingsParameter(extensionSetting: Int(id)), value: Int(value)))
      }
      return (HTTP2Frame(streamID: .rootStream, payload: .settings(.settings(settings))), 0)
    case 0x5:  // PUSH_PROMISE
      throw .connection(.protocolError, "a PUSH_PROMISE frame, though push is not enabled")
    case 0x6:  // PING
      try Self.onConnection(stream, "PING")
      guard length == 8, let data = payload.readInteger(as: UInt64.self) else {
        throw .connection(.frameSizeError, "a PING frame of \(length) bytes, not 8")
      }
      return (HTTP2Frame(streamID: .rootStream, payload: .ping(HTTP2PingData(withInteger: data), ack: flags & 0x1 != 0)), 0)
    case 0x7:  // GOAWAY
      try Self.onConnection(stream, "GOAWAY")
      guard length >= 8, let last = payload.readInteger(as: UInt32.self), let code = payload.readInteger(as: UInt32.self)
      else { throw .connection(.frameSizeError, "a GOAWAY frame of \(length) bytes, under 8") }
      let debug = payload.readableBytes > 0 ? payload : nil
      let frame = HTTP2Frame(
        streamID: .rootStream,
        payload: .goAway(lastStreamID: HTTP2StreamID(Int32(last & 0x7FFF_FFFF)), errorCode: HTTP2ErrorCode(networkCode: Int(code)), opaqueData: debug))
      return (frame, 0)
    case 0x8:  // WINDOW_UPDATE
      guard length == 4, let raw = payload.readInteger(as: UInt32.self) else {
        throw .connection(.frameSizeError, "a WINDOW_UPDATE frame of \(length) bytes, not 4")
      }
      let increment = Int(raw & 0x7FFF_FFFF)
      guard increment > 0 else {
        if stream == .rootStream { throw .connection(.protocolError, "a window increment of 0") }
        throw .stream(stream, .protocolError, "a window increment of 0")
      }
      return (HTTP2Frame(streamID: stream, payload: .windowUpdate(windowSizeIncrement: increment)), 0)
    default:
      // A frame of a type this side does not know: skipped (section 5.5).
      return nil
    }
  }

  private mutating func decode(_ headers: PendingHeaders) throws(HTTP2WireError) -> HTTP2Frame {
    let fields: HPACKHeaders
    do {
      fields = try decoder.decode(headers.block)
    } catch {
      throw .connection(.compressionError, "the header block of stream \(headers.stream) cannot be decoded: \(error)")
    }
    let payload = HTTP2Frame.FramePayload.Headers(
      headers: fields, priorityData: headers.priority, endStream: headers.endStream, paddingBytes: headers.padding)
    return HTTP2Frame(streamID: headers.stream, payload: .headers(payload))
  }

  private func blockTooLarge(_ stream: HTTP2StreamID) -> HTTP2WireError {
    .connection(.enhanceYourCalm, "the header block of stream \(stream) is over \(maxHeaderBlockSize) bytes")
  }

  private static func onStream(_ stream: HTTP2StreamID, _ type: String) throws(HTTP2WireError) {
    if stream == .rootStream { throw .connection(.protocolError, "a \(type) frame on stream 0") }
  }

  private static func onConnection(_ stream: HTTP2StreamID, _ type: String) throws(HTTP2WireError) {
    if stream != .rootStream { throw .connection(.protocolError, "a \(type) frame on stream \(stream), not 0") }
  }

  /// Takes a PADDED frame's padding off its payload: the padding's length, or nil when not padded.
  private static func unpad(_ payload: inout ByteBuffer, flags: UInt8, stream: HTTP2StreamID) throws(HTTP2WireError) -> Int? {
    guard flags & 0x8 != 0 else { return nil }
    guard let padding = payload.readInteger(as: UInt8.self), Int(padding) <= payload.readableBytes else {
      throw .connection(.protocolError, "padding on stream \(stream) as long as its frame")
    }
    payload.moveWriterIndex(to: payload.writerIndex - Int(padding))
    return Int(padding)
  }

  private static func priority(_ payload: inout ByteBuffer) -> HTTP2Frame.StreamPriorityData? {
    guard let dependency = payload.readInteger(as: UInt32.self), let weight = payload.readInteger(as: UInt8.self) else {
      return nil
    }
    return HTTP2Frame.StreamPriorityData(
      exclusive: dependency & 0x8000_0000 != 0, dependency: HTTP2StreamID(Int32(dependency & 0x7FFF_FFFF)), weight: weight)
  }

  /// Section 6.5.2's ranges for the settings it defines.
  private static func check(setting id: UInt16, value: UInt32) throws(HTTP2WireError) {
    switch id {
    case 0x2 where value > 1:
      throw .connection(.protocolError, "SETTINGS_ENABLE_PUSH of \(value)")
    case 0x4 where value > 0x7FFF_FFFF:
      throw .connection(.flowControlError, "SETTINGS_INITIAL_WINDOW_SIZE of \(value), above 2^31-1")
    case 0x5 where value < 16384 || value > 0xFF_FFFF:
      throw .connection(.protocolError, "SETTINGS_MAX_FRAME_SIZE of \(value), outside 16384...16777215")
    default:
      return
    }
  }
}
