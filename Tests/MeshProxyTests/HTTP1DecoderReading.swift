import NIOCore
import NIOEmbedded
import NIOHTTP1

/// What an HTTP/1.1 decoder on an `EmbeddedChannel` made of some bytes, as text, so that two decoders (the
/// proxy's and NIO's) can be compared: the messages (bodies joined; header values without trailing whitespace,
/// which llhttp keeps and the proxy's decoders drop: RFC 9110 5.5, and an HTTP/2 peer must refuse a value ending
/// in it), and the error caught, if any.
struct HTTP1DecoderReading: Equatable, CustomStringConvertible {
  var parts: [String] = []
  var failed = false
  /// The error was llhttp's `HTTPParserError`, which the pipelining handler and the request handler act on.
  var parserError = false
  var description: String { parts.joined(separator: " | ") + (failed ? " | error" : "") }

  static func fields(_ headers: HTTPHeaders, trimmed: Bool) -> String {
    headers.map { field in
      let value = trimmed ? String(field.value.reversed().drop { $0 == " " || $0 == "\t" }.reversed()) : field.value
      return "\(field.name)=\(value)"
    }.joined(separator: ",")
  }

  /// Feeds `bytes` to `channel` in pieces of `piece` bytes, then, with `eof`, closes its input; reads the
  /// `HTTPPart`s its decoder makes, each head as `head` writes it.
  static func read<Head: Equatable & Sendable>(
    _ channel: EmbeddedChannel, _ bytes: String, piece: Int, eof: Bool, head: (Head) -> String
  ) throws -> HTTP1DecoderReading {
    var reading = HTTP1DecoderReading()
    func collect() throws {
      while let part = try channel.readInbound(as: HTTPPart<Head, ByteBuffer>.self) {
        switch part {
        case .head(let value):
          reading.parts.append("head " + head(value))
        case .body(let buffer):
          let text = String(buffer: buffer)
          if let last = reading.parts.last, last.hasPrefix("body ") {
            reading.parts[reading.parts.count - 1] = last + text
          } else {
            reading.parts.append("body " + text)
          }
        case .end(let trailers):
          reading.parts.append("end \(trailers.map { fields($0, trimmed: false) } ?? "-")")
        }
      }
    }
    let data = Array(bytes.utf8)
    var offset = 0
    do {
      while offset < data.count {
        let end = min(data.count, offset + min(piece, data.count))
        try channel.writeInbound(ByteBuffer(bytes: data[offset..<end]))
        offset = end
        try collect()
      }
      if eof {
        channel.pipeline.fireChannelInactive()
        try channel.throwIfErrorCaught()
      }
    } catch {
      reading.failed = true
      reading.parserError = error is HTTPParserError
    }
    try collect()
    return reading
  }
}
