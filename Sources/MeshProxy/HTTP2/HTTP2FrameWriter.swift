import NIOCore
import NIOHPACK
import NIOHTTP2

/// Writes HTTP/2 frames (RFC 9113 sections 4 and 6) as bytes: the third part of the proxy's own HTTP/2 connection
/// code for mesh hops (``HPACKBlockEncoder`` encodes, ``HTTP2FrameReader`` reads), taking the `HTTP2Frame`
/// values ``HTTP2StreamsHandler`` writes.
///
/// A header block is encoded in place behind room left for its frame's header, which is filled in once the
/// block's length is known; a block longer than the peer's SETTINGS_MAX_FRAME_SIZE goes on in CONTINUATION
/// frames. What flow control allows, and that DATA frames fit the frame size, is the connection's to see to;
/// so are the streams' states. Push, ALTSVC and ORIGIN are never sent by this side and are refused.
struct HTTP2FrameWriter {
  /// The peer's SETTINGS_MAX_FRAME_SIZE.
  var maxFrameSize = 16384
  var encoder: HPACKBlockEncoder

  init(encoder: HPACKBlockEncoder = HPACKBlockEncoder()) {
    self.encoder = encoder
  }

  mutating func write(_ frame: HTTP2Frame, into buffer: inout ByteBuffer) throws(HTTP2WireError) {
    let stream = frame.streamID
    switch frame.payload {
    case .data(let data):
      guard case .byteBuffer(var body) = data.data else {
        throw .connection(.internalError, "a file region cannot be sent in a DATA frame on stream \(stream)")
      }
      let padding = data.paddingBytes ?? 0
      let flags: UInt8 = (data.endStream ? 0x1 : 0) | (data.paddingBytes != nil ? 0x8 : 0)
      let length = body.readableBytes + (data.paddingBytes != nil ? 1 + padding : 0)
      Self.writeHeader(length: length, type: 0x0, flags: flags, stream: stream, into: &buffer)
      if data.paddingBytes != nil { buffer.writeInteger(UInt8(padding)) }
      buffer.writeBuffer(&body)
      buffer.writeRepeatingByte(0, count: padding)
    case .headers(let headers):
      writeHeaders(headers, stream: stream, into: &buffer)
    case .priority(let priority):
      Self.writeHeader(length: 5, type: 0x2, flags: 0, stream: stream, into: &buffer)
      Self.writePriority(priority, into: &buffer)
    case .rstStream(let code):
      Self.writeHeader(length: 4, type: 0x3, flags: 0, stream: stream, into: &buffer)
      buffer.writeInteger(UInt32(code.networkCode))
    case .settings(.ack):
      Self.writeHeader(length: 0, type: 0x4, flags: 0x1, stream: .rootStream, into: &buffer)
    case .settings(.settings(let settings)):
      var ids: [UInt16] = []
      for setting in settings {
        // swift-nio-http2 keeps a parameter's number to itself: found among the ones RFC 9113 and 8441 define.
        guard let id = Self.settingIDs.first(where: { HTTP2SettingsParameter(extensionSetting: Int($0)) == setting.parameter })
        else { throw .connection(.internalError, "this side does not send the setting \(setting.parameter)") }
        ids.append(id)
      }
      Self.writeHeader(length: 6 * settings.count, type: 0x4, flags: 0, stream: .rootStream, into: &buffer)
      for (id, setting) in zip(ids, settings) {
        buffer.writeInteger(id)
        buffer.writeInteger(UInt32(setting.value))
      }
    case .ping(let data, let ack):
      Self.writeHeader(length: 8, type: 0x6, flags: ack ? 0x1 : 0, stream: .rootStream, into: &buffer)
      withUnsafeBytes(of: data.bytes) { buffer.writeBytes($0) }
    case .goAway(let last, let code, let debug):
      Self.writeHeader(length: 8 + (debug?.readableBytes ?? 0), type: 0x7, flags: 0, stream: .rootStream, into: &buffer)
      buffer.writeInteger(UInt32(Int32(last)))
      buffer.writeInteger(UInt32(code.networkCode))
      if let debug { buffer.writeImmutableBuffer(debug) }
    case .windowUpdate(let increment):
      Self.writeHeader(length: 4, type: 0x8, flags: 0, stream: stream, into: &buffer)
      buffer.writeInteger(UInt32(increment))
    case .pushPromise, .alternativeService, .origin:
      throw .connection(.internalError, "this side does not send \(frame.payload) frames")
    }
  }

  /// The settings this side may send: RFC 9113's six, ENABLE_CONNECT_PROTOCOL (RFC 8441) and
  /// NO_RFC7540_PRIORITIES (RFC 9218).
  private static let settingIDs: [UInt16] = [1, 2, 3, 4, 5, 6, 8, 9]

  /// HEADERS, and CONTINUATION frames for what of the block is past the frame size.
  private mutating func writeHeaders(_ headers: HTTP2Frame.FramePayload.Headers, stream: HTTP2StreamID, into buffer: inout ByteBuffer) {
    let padding = headers.paddingBytes
    let extras = (padding != nil ? 1 + padding! : 0) + (headers.priorityData != nil ? 5 : 0)
    var flags: UInt8 = headers.endStream ? 0x1 : 0
    if padding != nil { flags |= 0x8 }
    if headers.priorityData != nil { flags |= 0x20 }
    let start = buffer.writerIndex
    Self.writeHeader(length: 0, type: 0x1, flags: flags | 0x4, stream: stream, into: &buffer)
    if let padding { buffer.writeInteger(UInt8(padding)) }
    if let priority = headers.priorityData { Self.writePriority(priority, into: &buffer) }
    let blockStart = buffer.writerIndex
    encoder.encode(headers.headers, into: &buffer)
    let blockLength = buffer.writerIndex - blockStart
    if blockLength + extras <= maxFrameSize {
      buffer.writeRepeatingByte(0, count: padding ?? 0)
      Self.setLength(blockLength + extras, at: start, in: &buffer)
      return
    }
    // Longer than a frame: the block (which the buffer's next writes leave as it is: they copy the storage
    // this slice shares) is cut into the HEADERS frame and CONTINUATION frames.
    var block = buffer.getSlice(at: blockStart, length: blockLength)!
    buffer.moveWriterIndex(to: start)
    let first = maxFrameSize - extras
    Self.writeHeader(length: maxFrameSize, type: 0x1, flags: flags, stream: stream, into: &buffer)
    if let padding { buffer.writeInteger(UInt8(padding)) }
    if let priority = headers.priorityData { Self.writePriority(priority, into: &buffer) }
    var part = block.readSlice(length: first)!
    buffer.writeBuffer(&part)
    buffer.writeRepeatingByte(0, count: padding ?? 0)
    while block.readableBytes > 0 {
      let length = min(block.readableBytes, maxFrameSize)
      let last = length == block.readableBytes
      Self.writeHeader(length: length, type: 0x9, flags: last ? 0x4 : 0, stream: stream, into: &buffer)
      part = block.readSlice(length: length)!
      buffer.writeBuffer(&part)
    }
  }

  private static func writeHeader(length: Int, type: UInt8, flags: UInt8, stream: HTTP2StreamID, into buffer: inout ByteBuffer) {
    buffer.writeInteger(UInt8(truncatingIfNeeded: length >> 16))
    buffer.writeInteger(UInt16(truncatingIfNeeded: length))
    buffer.writeInteger(type)
    buffer.writeInteger(flags)
    buffer.writeInteger(UInt32(Int32(stream)))
  }

  private static func setLength(_ length: Int, at start: Int, in buffer: inout ByteBuffer) {
    buffer.setInteger(UInt8(truncatingIfNeeded: length >> 16), at: start)
    buffer.setInteger(UInt16(truncatingIfNeeded: length), at: start + 1)
  }

  private static func writePriority(_ priority: HTTP2Frame.StreamPriorityData, into buffer: inout ByteBuffer) {
    buffer.writeInteger(UInt32(Int32(priority.dependency)) | (priority.exclusive ? 0x8000_0000 : 0))
    buffer.writeInteger(priority.weight)
  }
}
