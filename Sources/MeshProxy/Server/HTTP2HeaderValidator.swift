import NIOCore
import NIOHPACK
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
/// - `:protocol` (extended CONNECT) is refused: the proxy does not offer it.
///
/// The codecs (``HTTP2ClientStreamCodec``, ``HTTP2ServerStreamCodec``) run these checks in the pass that
/// reads a block's pseudo-header fields: a malformed request is reset with PROTOCOL_ERROR and goes no
/// further; a malformed response fails the stream with ``Malformed`` (the proxy answers its client 502) and
/// resets it. Nothing after it is read.
enum HTTP2HeaderValidator {
  /// A received header block broke a rule of RFC 9113.
  struct Malformed: Error, CustomStringConvertible {
    let reason: String
    var description: String { "malformed HTTP/2 header block: \(reason)" }
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

  /// What a valid block's pseudo-header fields said, and the two regular fields the translation to HTTP/1
  /// looks for, found in the same pass.
  struct Block {
    var method: String?
    var path: String?
    var authority: String?
    var status: String?
    var hasHost = false
    var hasContentLength = false
    /// A response that is not 1xx.
    var finalResponse: Bool { status.map { $0.utf8.first != UInt8(ascii: "1") } ?? false }
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

  /// Checks one received header block of `kind`, and reads its pseudo-header fields on the way.
  static func read(_ headers: HPACKHeaders, as kind: Kind) -> Reading {
    var seen: Pseudo = []
    var regularBegun = false
    var isConnect = false
    var emptyPath = false
    var block = Block()
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
        case .contentLength: block.hasContentLength = true
        case .connectionSpecific: return .invalid("connection-specific field \(name)")
        case .te: if kind == .request, value != "trailers" { return .invalid("te other than trailers") }
        case .notToken, .other: break
        }
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

  /// The pseudo-header field `name` is, by its bytes (a `switch` over strings compares them one by one).
  private static func pseudoField(_ name: String) -> Pseudo? {
    var name = name
    return name.withUTF8 { utf8 in
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
    case other
  }

  /// ``isToken(_:)`` and which of the names the rules single out `name` is, in one look at its bytes: a block's
  /// names are lowercase once they are tokens, so each comparison is of bytes as they are.
  static func regularField(_ name: String) -> RegularField {
    var name = name
    return name.withUTF8 { utf8 in
      guard isToken(utf8) else { return .notToken }
      let bytes = UnsafeRawBufferPointer(utf8)
      switch bytes.count {
      case 2: return equals(bytes, "te") ? .te : .other
      case 4: return equals(bytes, "host") ? .host : .other
      case 7: return equals(bytes, "upgrade") ? .connectionSpecific : .other
      case 10: return equals(bytes, "connection") || equals(bytes, "keep-alive") ? .connectionSpecific : .other
      case 14: return equals(bytes, "content-length") ? .contentLength : .other
      case 16: return equals(bytes, "proxy-connection") ? .connectionSpecific : .other
      case 17: return equals(bytes, "transfer-encoding") ? .connectionSpecific : .other
      default: return .other
      }
    }
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

  /// No NUL, CR or LF (RFC 9113 8.2.1).
  static func isValidValue(_ value: String) -> Bool {
    var value = value
    return value.withUTF8 { bytes in !bytes.contains { $0 == 0 || $0 == 0x0A || $0 == 0x0D } }
  }

  /// No space, control byte or DEL: a pseudo-header's value becomes part of a request line or status line.
  static func isValidPseudoValue(_ value: String) -> Bool {
    var value = value
    return value.withUTF8 { bytes in !bytes.contains { $0 <= 0x20 || $0 == 0x7F } }
  }
}
