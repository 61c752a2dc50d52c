import NIOCore
import NIOHPACK
import NIOHTTP1
import NIOHTTP2

/// The rules for the header blocks an HTTP/2 stream *receives*, as RFC 9113 (8.2, 8.3) demands, in place of
/// swift-nio-http2's header block validation, which the proxy's connections turn off.
///
/// swift-nio-http2 validates every header block it sends as well as those it receives, with one switch for
/// both. A proxy sends only what it received and validated, or its own headers, so validating the sent blocks
/// again cost an HTTP/2 hop about 17,000 instructions a request, and the received ones as much again, most of
/// it in generic `Substring` iteration (Benchmarks/load/instructions.sh). The same rules are checked
/// here on the received blocks, byte by byte:
///
/// - field names are lowercase tokens, and pseudo-header fields come first, each at most once, and only
///   those a block of its kind may carry (`:method`, `:scheme`, `:path`, `:authority` in a request; `:status`
///   in a response; none in trailers), with the mandatory ones present (`:method`, `:scheme` and a non-empty
///   `:path`, or `:method` and `:authority` for CONNECT; `:status`);
/// - no field value has NUL, CR or LF, and no pseudo-header value has a space or control byte;
/// - no connection-specific field (`connection`, `keep-alive`, `proxy-connection`, `transfer-encoding`,
///   `upgrade`), and `te` only as `trailers` in a request;
/// - `:protocol` (extended CONNECT) is refused: the proxy does not offer it;
/// - `content-length` is digits (a list of equal values is read as one value), and every such field of a
///   block agrees; the codecs then hold the stream's DATA to it (``HTTP2BodyLength``).
///
/// The codecs (``HTTP2ClientStreamCodec``, ``HTTP2ServerStreamCodec``) run these checks in the pass that
/// reads a block's pseudo-header fields: a malformed request is reset with PROTOCOL_ERROR and goes no
/// further; a malformed response fails the stream with ``Malformed`` (the proxy answers its client 502) and
/// resets it. Nothing after it is read.
enum HTTP2HeaderValidator {
  /// A received header block broke a rule of RFC 9113.
  struct Malformed: Error, CustomStringConvertible {
    let reason: String
    /// What broke the rule: a header block, or a stream's body against its `content-length`.
    var part = "header block"
    var description: String { "malformed HTTP/2 \(part): \(reason)" }

    init(reason: String) { self.reason = reason }

    /// A stream whose DATA does not add up to its `content-length` (``HTTP2BodyLength``).
    static func body(_ reason: String) -> Malformed {
      var malformed = Malformed(reason: reason)
      malformed.part = "body"
      return malformed
    }
  }

  // MARK: The rules

  enum Kind {
    case request
    case response
    case trailers
  }

  enum Verdict: Equatable {
    /// Valid; for a response, whether it is final (not 1xx).
    case valid(finalResponse: Bool)
    case invalid(String)
  }

  /// What a valid block's pseudo-header fields said, the two regular fields the translation to HTTP/1 looks
  /// for, and the regular fields themselves, gathered in the same pass: the HTTP/1 headers are made from
  /// ``regular`` without a second pass over the block (about 1,000 instructions a block, copying and releasing
  /// every field's two strings again).
  struct Block {
    var method: String?
    var path: String?
    var authority: String?
    var status: String?
    var hasHost = false
    /// The `content-length` the block declares, if any.
    var contentLength: Int?
    var hasContentLength: Bool { contentLength != nil }
    /// A response that is not 1xx.
    var finalResponse: Bool { status.map { $0.utf8.first != UInt8(ascii: "1") } ?? false }
    /// The regular fields, in order (names lowercase, as the rules demand), with room for a few more; without
    /// the mesh's own fields when the reading took them out.
    var regular: [(String, String)] = []
    /// The mesh's original-protocol mark was taken out: a peer proxy carried an HTTP/1.1 request.
    var carriedHTTP1 = false

    /// ``regular`` as HTTP/1 headers, after `first` and `second` when given (a request's `host`, its body's
    /// framing), which go in front in the room the reading left.
    consuming func headers(first: (String, String)? = nil, second: (String, String)? = nil) -> HTTPHeaders {
      var fields = regular
      regular = []
      if let second { fields.insert(second, at: 0) }
      if let first { fields.insert(first, at: 0) }
      return HTTPHeaders(fields)
    }
  }

  enum Reading {
    case valid(Block)
    case invalid(String)
  }

  private struct Pseudo: OptionSet {
    let rawValue: UInt8
    static let method = Pseudo(rawValue: 1 << 0)
    static let scheme = Pseudo(rawValue: 1 << 1)
    static let path = Pseudo(rawValue: 1 << 2)
    static let authority = Pseudo(rawValue: 1 << 3)
    static let status = Pseudo(rawValue: 1 << 4)
  }

  /// Checks one received header block of `kind`.
  static func check(_ headers: HPACKHeaders, as kind: Kind) -> Verdict {
    switch read(headers, as: kind) {
    case .valid(let block): .valid(finalResponse: kind == .response && block.finalResponse)
    case .invalid(let reason): .invalid(reason)
    }
  }

  /// Checks one received header block of `kind`, and reads its pseudo-header fields and gathers its regular
  /// fields on the way (``Block/regular``, with room for `room` more). `takingOutMeshFields` leaves the mesh's
  /// own fields out of them: the hop header (``LoopGuard``) and the original-protocol mark
  /// (``Block/carriedHTTP1``), as a request arrives where the mesh ends
  /// (``RequestRouter/takesOutMeshFieldsOnArrival``).
  static func read(_ headers: HPACKHeaders, as kind: Kind, takingOutMeshFields: Bool = false, room: Int = 2) -> Reading {
    var seen: Pseudo = []
    var regularBegun = false
    var isConnect = false
    var emptyPath = false
    var block = Block()
    block.regular.reserveCapacity(headers.count + room)
    for (name, value, _) in headers {
      guard let first = name.utf8.first else { return .invalid("an empty field name") }
      if first == UInt8(ascii: ":") {
        guard !regularBegun else { return .invalid("pseudo-header field \(name) after a regular field") }
        guard let pseudo = pseudoField(name) else { return .invalid("unknown pseudo-header field \(name)") }
        guard !seen.contains(pseudo) else { return .invalid("pseudo-header field \(name) twice") }
        seen.insert(pseudo)
        guard isValidPseudoValue(value) else { return .invalid("a space or control byte in \(name)") }
        switch pseudo {
        case .method:
          isConnect = value == "CONNECT"
          block.method = value
        case .path:
          emptyPath = value.utf8.isEmpty
          block.path = value
        case .authority: block.authority = value
        case .status: block.status = value
        default: break
        }
      } else {
        regularBegun = true
        let regular = regularField(name)
        guard regular != .notToken else { return .invalid("field name '\(name)' is not a lowercase token") }
        guard isValidValue(value) else { return .invalid("NUL, CR or LF in the value of \(name)") }
        switch regular {
        case .host: block.hasHost = true
        case .contentLength:
          guard let length = contentLength(value) else { return .invalid("a content-length that is not digits") }
          if let earlier = block.contentLength, earlier != length { return .invalid("content-length fields that disagree") }
          block.contentLength = length
        case .connectionSpecific: return .invalid("connection-specific field \(name)")
        case .te: if kind == .request, value != "trailers" { return .invalid("te other than trailers") }
        case .meshVia where takingOutMeshFields: continue
        case .meshOrigProto where takingOutMeshFields:
          block.carriedHTTP1 = true
          continue
        case .notToken, .other, .meshVia, .meshOrigProto: break
        }
        block.regular.append((name, value))
      }
    }
    let allowed: Pseudo
    let mandatory: Pseudo
    switch kind {
    case .request:
      allowed = isConnect ? [.method, .authority] : [.method, .scheme, .path, .authority]
      mandatory = isConnect ? [.method, .authority] : [.method, .scheme, .path]
      if seen.contains(.path), emptyPath { return .invalid("an empty :path") }
    case .response:
      allowed = .status
      mandatory = .status
    case .trailers:
      allowed = []
      mandatory = []
    }
    guard seen.isSubset(of: allowed) else { return .invalid("pseudo-header fields a \(kind) may not carry") }
    guard seen.isSuperset(of: mandatory) else { return .invalid("a mandatory pseudo-header field of a \(kind) is missing") }
    return .valid(block)
  }

  /// A `content-length` value: digits, or a comma-separated list of elements that are all the same number
  /// (RFC 9110 8.6 lets a recipient take such a list as the one value, as swift-nio-http2 did); nil otherwise.
  static func contentLength(_ value: String) -> Int? {
    var value = value
    return value.withUTF8 { utf8 in
      let bytes = UnsafeRawBufferPointer(utf8)
      // Nearly every value is one number.
      if let length = try? HTTP1Grammar.contentLength(bytes) { return length }
      // A comma at the end is an empty element the split does not visit.
      guard let last = bytes.last(where: { $0 != 0x20 && $0 != 0x09 }), last != UInt8(ascii: ",") else { return nil }
      var length: Int?
      var valid = true
      HTTP1Grammar.forEachToken(bytes) { element in
        guard valid, let parsed = try? HTTP1Grammar.contentLength(element), length == nil || length == parsed else {
          valid = false
          return
        }
        length = parsed
      }
      return valid ? length : nil
    }
  }

  /// The pseudo-header field `name` is, by its bytes (a `switch` over strings compares them one by one).
  private static func pseudoField(_ name: String) -> Pseudo? {
    withBytes(name) { utf8 in
      let bytes = UnsafeRawBufferPointer(utf8)
      switch bytes.count {
      case 5: return equals(bytes, ":path") ? .path : nil
      case 7:
        if equals(bytes, ":method") { return .method }
        if equals(bytes, ":status") { return .status }
        return equals(bytes, ":scheme") ? .scheme : nil
      case 10: return equals(bytes, ":authority") ? .authority : nil
      default: return nil
      }
    }
  }

  /// What a regular field's name is, as far as the rules care.
  enum RegularField {
    case notToken
    case host
    case contentLength
    case te
    /// `connection`, `keep-alive`, `proxy-connection`, `transfer-encoding`, `upgrade` (RFC 9113 8.2.2).
    case connectionSpecific
    /// The mesh's hop header (``LoopGuard/headerName``).
    case meshVia
    /// The mesh's original-protocol mark (`MeshHeaders.origProto`, lowercase).
    case meshOrigProto
    case other
  }

  /// ``isToken(_:)`` and which of the names the rules single out `name` is, in one look at its bytes: a block's
  /// names are lowercase once they are tokens, so each comparison is of bytes as they are.
  static func regularField(_ name: String) -> RegularField {
    withBytes(name) { utf8 in
      guard isToken(utf8) else { return .notToken }
      let bytes = UnsafeRawBufferPointer(utf8)
      switch bytes.count {
      case 2: return equals(bytes, "te") ? .te : .other
      case 4: return equals(bytes, "host") ? .host : .other
      case 7: return equals(bytes, "upgrade") ? .connectionSpecific : .other
      case 10: return equals(bytes, "connection") || equals(bytes, "keep-alive") ? .connectionSpecific : .other
      case 13: return equals(bytes, "swiftmesh-via") ? .meshVia : .other
      case 14: return equals(bytes, "content-length") ? .contentLength : .other
      case 16: return equals(bytes, "proxy-connection") ? .connectionSpecific : .other
      case 17: return equals(bytes, "transfer-encoding") ? .connectionSpecific : .other
      case 20: return equals(bytes, "swiftmesh-orig-proto") ? .meshOrigProto : .other
      default: return .other
      }
    }
  }

  /// `body` over the string's UTF-8 bytes: in place, where a native string keeps them, without the copy
  /// `String.withUTF8` needs (it is `mutating`, so a parameter is first copied into a variable: a retain and
  /// a release each time, three a field).
  @inline(__always)
  private static func withBytes<Result>(_ string: String, _ body: (UnsafeBufferPointer<UInt8>) -> Result) -> Result {
    if let result = string.utf8.withContiguousStorageIfAvailable(body) { return result }
    var string = string
    return string.withUTF8(body)
  }

  /// The byte comparison the HTTP/1.1 reader uses (a validated name is lowercase, so its case folding never
  /// applies).
  @inline(__always)
  private static func equals(_ bytes: UnsafeRawBufferPointer, _ literal: StaticString) -> Bool {
    HTTP1Grammar.isName(bytes, literal)
  }

  /// RFC 9110 `tchar` without uppercase letters (RFC 9113 8.2.1): `!#$%&'*+-.^_`|~`, digits, `a-z`.
  private static let tokenBytes: (UInt64, UInt64) = {
    var low: UInt64 = 0
    var high: UInt64 = 0
    for byte in UInt8(0)..<128 {
      let ok: Bool
      switch byte {
      case 0x21, 0x23...0x27, 0x2A, 0x2B, 0x2D, 0x2E, 0x30...0x39, 0x5E...0x7A, 0x7C, 0x7E: ok = true
      default: ok = false
      }
      if ok {
        if byte < 64 { low |= 1 << UInt64(byte) } else { high |= 1 << UInt64(byte - 64) }
      }
    }
    return (low, high)
  }()

  static func isToken(_ name: String) -> Bool {
    var name = name
    return name.withUTF8 { isToken($0) }
  }

  @inline(__always)
  private static func isToken(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
    let (low, high) = tokenBytes
    for byte in bytes {
      if byte < 64 {
        guard low & (1 << UInt64(byte)) != 0 else { return false }
      } else if byte < 128 {
        guard high & (1 << UInt64(byte - 64)) != 0 else { return false }
      } else {
        return false
      }
    }
    return true
  }

  /// No NUL, CR or LF (RFC 9113 8.2.1). A word with no byte below 0x0E has none of the three, and values
  /// rarely have any control byte but tab.
  static func isValidValue(_ value: String) -> Bool {
    scan(value, clean: { !hasByte(below: 0x0E, in: $0) }, valid: { $0 != 0 && $0 != 0x0A && $0 != 0x0D })
  }

  /// No space, control byte or DEL: a pseudo-header's value becomes part of a request line or status line.
  static func isValidPseudoValue(_ value: String) -> Bool {
    scan(
      value, clean: { !hasByte(below: 0x21, in: $0) && !hasByte(below: 1, in: $0 ^ (ones &* 0x7F)) },
      valid: { $0 > 0x20 && $0 != 0x7F })
  }

  private static let ones: UInt64 = 0x0101_0101_0101_0101

  /// Whether a byte of `word` is below `bound`, at most 0x80 ("hasless" in Bit Twiddling Hacks: exact for such
  /// bounds).
  @inline(__always)
  private static func hasByte(below bound: UInt64, in word: UInt64) -> Bool {
    (word &- ones &* bound) & ~word & (ones &* 0x80) != 0
  }

  /// Whether every byte of `value` is `valid`: eight bytes at a time while `clean` says a word is, byte by byte
  /// from the first word that is not. Byte by byte alone, with a closure, cost about 100 instructions a field.
  @inline(__always)
  private static func scan(_ value: String, clean: (UInt64) -> Bool, valid: (UInt8) -> Bool) -> Bool {
    withBytes(value) { bytes in
      let count = bytes.count
      var index = 0
      if let base = UnsafeRawPointer(bytes.baseAddress) {
        while index + 8 <= count, clean(base.loadUnaligned(fromByteOffset: index, as: UInt64.self)) { index += 8 }
      }
      while index < count {
        guard valid(bytes[index]) else { return false }
        index += 1
      }
      return true
    }
  }
}

/// A received stream's body held to the `content-length` its header block declared (RFC 9113 8.1.1: a
/// request or response whose DATA adds up to another length is malformed), in place of swift-nio-http2's
/// content-length validation, which the proxy's connections turn off
/// (`NIOHTTP2Handler.ConnectionConfiguration.proxy(meshPeer:)`). That validation also checked every block the
/// proxy sends, and found a block's `content-length` by comparing every field's name without regard to case:
/// about 3,200 instructions a request on each side of the mTLS pair. A proxy sends only bodies it read whole,
/// by their own framing (HTTP/1.1's, or HTTP/2's checked here), so the check is kept where it matters: what the
/// proxy receives, before a body goes on to an HTTP/1.1 connection, where a length the bytes do not match
/// would split one message into two.
struct HTTP2BodyLength {
  /// Bytes the stream may still carry; nil when no length was declared.
  private var remaining: Int?

  /// The bytes the message may carry: its block's `content-length` (nil: none), or 0 where the message has no
  /// body whatever its length says (a response to HEAD, a 204, a 304).
  mutating func expect(_ length: Int?) { remaining = length }

  /// A DATA frame of `count` bytes: nil when it fits, else why the stream is malformed.
  mutating func received(_ count: Int, endStream: Bool) -> String? {
    if let left = remaining {
      guard count <= left else { return "more DATA than its content-length" }
      remaining = left - count
    }
    return endStream ? ended() : nil
  }

  /// The stream ends: nil when its DATA made up the declared length, else why it is malformed.
  func ended() -> String? {
    guard let left = remaining, left > 0 else { return nil }
    return "less DATA than its content-length"
  }
}
