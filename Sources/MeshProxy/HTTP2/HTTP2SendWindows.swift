import NIOCore
import NIOHTTP2

/// Send-side flow control of one HTTP/2 connection (RFC 9113, section 6.9), the fourth part of the proxy's own
/// HTTP/2 connection code for mesh hops: the connection's window and each open stream's, and the DATA waiting
/// for room in them, with the frames written behind it on its stream (trailers) held in order.
///
/// DATA goes out only as far as both windows allow, cut into frames of at most the peer's SETTINGS_MAX_FRAME_SIZE;
/// the rest waits. Streams with something waiting take turns, one frame each, so that one large body does not
/// hold back every other stream's. `Tag` travels with each frame handed in (the write's promise) and comes back
/// with the last frame cut from it, or from ``close(_:)`` when the stream ends before it is sent.
/// Used only on the connection's event loop.
struct HTTP2SendWindows<Tag> {
  /// A frame handed in and waiting: DATA (flow controlled) or any other frame of the stream, behind DATA.
  private struct Waiting {
    var payload: HTTP2Frame.FramePayload
    var tag: Tag?
  }

  private struct Stream {
    var window: Int
    /// Frames waiting, oldest first; no storage until the first.
    var waiting: CircularBuffer<Waiting>?
    /// In ``turns`` (has something waiting).
    var hasTurn = false
  }

  /// The largest window RFC 9113 allows (2^31-1).
  static var maxWindow: Int { Int(Int32.max) }

  /// The connection's window: DATA bytes the peer takes before its next WINDOW_UPDATE on stream 0.
  private(set) var connectionWindow = 65535
  /// The window a new stream starts with: the peer's SETTINGS_INITIAL_WINDOW_SIZE.
  private(set) var initialWindow = 65535
  private var streams = HTTP2StreamSlots<Stream>()
  /// Streams with frames waiting, in the order they take turns.
  private var turns = CircularBuffer<HTTP2StreamID>()

  init() {}

  /// How many streams are open here.
  var openStreams: Int { streams.count }

  /// Whether any frame waits (for window, or behind DATA that does).
  var hasWaiting: Bool { !turns.isEmpty }

  func isOpen(_ id: HTTP2StreamID) -> Bool { streams[id] != nil }

  /// The window of stream `id`, or nil when it is not open here.
  func window(of id: HTTP2StreamID) -> Int? { streams[id]?.window }

  /// A stream opens with the peer's initial window.
  mutating func open(_ id: HTTP2StreamID) {
    if streams[id] == nil { streams[id] = Stream(window: initialWindow) }
  }

  /// Takes `payload` of stream `id` to send now, when nothing of the stream waits and, for DATA, both windows
  /// hold all of it and it fits in one frame of `maxFrameSize`: then it is counted against the windows and the
  /// caller writes it. Otherwise (false) the caller hands it in with ``enqueue(_:tag:on:)``. A frame of a
  /// stream not open here is the caller's to judge (true).
  mutating func sendNow(_ payload: HTTP2Frame.FramePayload, on id: HTTP2StreamID, maxFrameSize: Int) -> Bool {
    let connectionWindow = self.connectionWindow
    let sent: Bool? = update(id) { stream in
      if stream.hasTurn { return false }
      guard case .data(let data) = payload else { return true }
      let size = Self.flowControlledSize(data)
      guard size <= connectionWindow, size <= stream.window, size <= maxFrameSize else { return false }
      stream.window -= size
      return true
    }
    guard let sent else { return true }
    if sent, case .data(let data) = payload { self.connectionWindow -= Self.flowControlledSize(data) }
    return sent
  }

  /// Hands in `payload` of stream `id` to wait behind what waits already; sent by ``next(maxFrameSize:)``.
  /// False, and nothing kept, when the stream is not open here.
  mutating func enqueue(_ payload: HTTP2Frame.FramePayload, tag: Tag?, on id: HTTP2StreamID) -> Bool {
    let newTurn: Bool? = update(id) { stream in
      if stream.waiting == nil { stream.waiting = CircularBuffer(initialCapacity: 4) }
      stream.waiting!.append(Waiting(payload: payload, tag: tag))
      if stream.hasTurn { return false }
      stream.hasTurn = true
      return true
    }
    guard let newTurn else { return false }
    if newTurn { turns.append(id) }
    return true
  }

  /// The next frame the windows allow, from the next stream whose turn it is, or nil when none can go. A DATA
  /// frame longer than the windows or `maxFrameSize` allow is cut: its first part goes, the rest waits; `tag`
  /// is the tag handed in with the frame when this is its last part, else nil.
  mutating func next(maxFrameSize: Int) -> (stream: HTTP2StreamID, payload: HTTP2Frame.FramePayload, tag: Tag?)? {
    var looked = 0
    let count = turns.count
    while looked < count {
      looked += 1
      let id = turns.removeFirst()
      let connectionWindow = self.connectionWindow
      let taken: (sent: (payload: HTTP2Frame.FramePayload, tag: Tag?, size: Int)?, more: Bool)? = update(id) { stream in
        guard let first = stream.waiting?.first else {
          stream.hasTurn = false
          return (nil, false)
        }
        var result: (HTTP2Frame.FramePayload, Tag?, Int)?
        switch first.payload {
        case .data(var data):
          let size = Self.flowControlledSize(data)
          let room = min(connectionWindow, stream.window)
          if size == 0 || size <= room && size <= maxFrameSize {
            stream.waiting!.removeFirst()
            result = (.data(data), first.tag, size)
          } else if room > 0, case .byteBuffer(var body) = data.data {
            // A part: what the windows and the frame size allow, without the padding (which goes with the last).
            let part = min(room, maxFrameSize, body.readableBytes)
            if part > 0 {
              let slice = body.readSlice(length: part)!
              data.data = .byteBuffer(body)
              stream.waiting![stream.waiting!.startIndex].payload = .data(data)
              result = (.data(HTTP2Frame.FramePayload.Data(data: .byteBuffer(slice))), nil, part)
            }
          }
        default:
          stream.waiting!.removeFirst()
          result = (first.payload, first.tag, 0)
        }
        if let result { stream.window -= result.2 }
        let more = !stream.waiting!.isEmpty
        if !more { stream.hasTurn = false }
        return (result, more)
      }
      guard let taken else { continue }
      // A stream whose turn comes back: after the others, or now and then when nothing could go.
      if taken.more { turns.append(id) }
      guard let sent = taken.sent else { continue }
      self.connectionWindow -= sent.size
      return (id, sent.payload, sent.tag)
    }
    return nil
  }

  /// `body` on stream `id`'s state in place, or nil when it is not open here.
  private mutating func update<Result>(_ id: HTTP2StreamID, _ body: (inout Stream) -> Result) -> Result? {
    streams.update(id, body)
  }

  /// A WINDOW_UPDATE from the peer, on stream 0 (the connection) or a stream. A window above 2^31-1 is a
  /// FLOW_CONTROL_ERROR: of the connection, or of the stream. An update for a stream not open here is ignored
  /// (it closed; the peer may not know yet).
  mutating func windowUpdate(_ increment: Int, on id: HTTP2StreamID) throws(HTTP2WireError) {
    if id == .rootStream {
      guard connectionWindow + increment <= Self.maxWindow else {
        throw .connection(.flowControlError, "the connection's send window would exceed 2^31-1")
      }
      connectionWindow += increment
      return
    }
    guard let window = streams[id]?.window else { return }
    guard window + increment <= Self.maxWindow else {
      throw .stream(id, .flowControlError, "stream \(id)'s send window would exceed 2^31-1")
    }
    streams.update(id) { $0.window += increment }
  }

  /// The peer's SETTINGS_INITIAL_WINDOW_SIZE changed to `value`: every open stream's window moves by the
  /// difference (section 6.9.2), and may go below zero; one pushed above 2^31-1 is a connection
  /// FLOW_CONTROL_ERROR.
  mutating func setInitialWindow(_ value: Int) throws(HTTP2WireError) {
    let delta = value - initialWindow
    guard delta != 0 else { return }
    if delta > 0 {
      for stream in streams.allValues where stream.window + delta > Self.maxWindow {
        throw .connection(.flowControlError, "SETTINGS_INITIAL_WINDOW_SIZE \(value) pushes a stream's window above 2^31-1")
      }
    }
    initialWindow = value
    streams.updateAll { $0.window += delta }
  }

  /// Stream `id` ended: the tags of the frames still waiting come back, oldest first, for their writes to fail.
  mutating func close(_ id: HTTP2StreamID) -> [Tag] {
    guard let stream = streams.removeValue(forKey: id) else { return [] }
    if stream.hasTurn, let at = turns.firstIndex(of: id) { turns.remove(at: at) }
    return stream.waiting?.compactMap(\.tag) ?? []
  }

  /// The connection ended: every tag still waiting.
  mutating func closeAll() -> [Tag] {
    var tags: [Tag] = []
    for stream in streams.allValues { tags += stream.waiting?.compactMap(\.tag) ?? [] }
    streams = HTTP2StreamSlots()
    turns = CircularBuffer()
    return tags
  }

  /// What a DATA frame counts against the windows: its body and all its padding (section 6.9.1).
  static func flowControlledSize(_ data: HTTP2Frame.FramePayload.Data) -> Int {
    data.data.readableBytes + (data.paddingBytes.map { $0 + 1 } ?? 0)
  }
}
