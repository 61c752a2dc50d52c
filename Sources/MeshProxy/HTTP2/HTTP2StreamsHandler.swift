import NIOCore
import NIOHTTP1
import NIOHTTP2

/// One HTTP/2 connection of the proxy driven by frames, on either side: swift-nio-http2's `NIOHTTP2Handler`
/// without its stream multiplexer (or, between two proxies, the proxy's own ``HTTP2ConnectionHandler``), and
/// this handler behind it, which keeps one ``HTTP2FrameStream`` object per
/// stream and hands each its frames.
///
/// NIO's multiplexer makes every stream a child channel with a pipeline of its own: set up, activated, torn
/// down and freed once per request, with a future for its creation and its close. Through the mTLS pair that
/// was about 15,000-20,000 instructions a request on each proxy (Benchmarks/load/instructions.sh), for a
/// stream that only ever has one handler. Here a stream is an object, and what the multiplexer did for it is
/// done here:
/// - client (an upstream connection): streams are made here (``makeStream(scheme:)``) and get their IDs, odd
///   and increasing, when their first frame is written, so that IDs reach the connection in order whatever
///   order the streams were made in;
/// - server (a downstream connection): a HEADERS frame with a new stream ID makes a stream (`accept`), and the
///   streams open are tracked for graceful shutdown (``HTTP2StreamTracker``);
/// - inbound flow control: WINDOW_UPDATE frames for the connection and each stream, as the data is read
///   (``HTTP2InboundWindow``, the same rule as NIO's), held back for a stream whose reading is paused;
/// - outbound back-pressure: a stream is writable while less than the high watermark of its DATA is waiting
///   to be written (counted when `NIOHTTP2Handler` writes a frame: ``wroteFrame(_:)``) and the connection is
///   writable;
/// - the end of a stream (`StreamClosedEvent`), a reset, a stream error and the connection's end, told to the
///   stream as a stream channel's handler would have been told them.
///
/// Frames of stream 0 (SETTINGS, PING, GOAWAY) and every other event go on to the next handler. Used only on
/// the connection's event loop.
final class HTTP2StreamsHandler: ChannelInboundHandler, NIOHTTP2FrameDelegate, HTTP2ConnectionDelegate {
  typealias InboundIn = HTTP2Frame
  typealias InboundOut = HTTP2Frame
  typealias OutboundOut = HTTP2Frame

  /// Makes the stream a client opened with a HEADERS frame (server side), or nil to refuse it.
  typealias Accept = (_ connection: HTTP2StreamsHandler, _ id: HTTP2StreamID) -> HTTP2FrameStream?

  private var context: ChannelHandlerContext?
  private var streams = HTTP2StreamTable()
  private let accept: Accept?
  private let tracker: HTTP2StreamTracker?
  /// Client: the ID the next stream to send its first frame gets. Server: above the highest stream opened.
  private var nextStreamID = HTTP2StreamID(1)
  private let outboundHighWatermark: Int
  private let outboundLowWatermark: Int
  private var connectionWindow: HTTP2InboundWindow
  /// The stream windows as the peer last confirmed our SETTINGS (new streams start there).
  private var streamWindowTarget: Int
  /// Inside a read of the connection: flushes wait for its end (one flush for every WINDOW_UPDATE it caused).
  private var reading = false
  private var flushPending = false
  /// The streams that got frames in this read: told `readComplete` at its end.
  private var streamsRead: [HTTP2FrameStream] = []
  /// Client: the connection is usable for new streams (in a pipeline, active, stream IDs left, no GOAWAY).
  private(set) var isOpen = false
  private(set) var isWritable = true

  /// The client side of a connection: streams are made with ``makeStream(scheme:)``.
  convenience init(connectionWindowTarget: Int = 65535, streamWindowTarget: Int = 65535) {
    self.init(accept: nil, tracker: nil, connectionWindowTarget: connectionWindowTarget, streamWindowTarget: streamWindowTarget)
  }

  /// The server side of a connection: `accept` makes a stream for each the client opens; `tracker` is told
  /// which are open.
  convenience init(server tracker: HTTP2StreamTracker, accept: @escaping Accept) {
    self.init(accept: accept, tracker: tracker, connectionWindowTarget: 65535, streamWindowTarget: 65535)
  }

  private init(
    accept: Accept?, tracker: HTTP2StreamTracker?, connectionWindowTarget: Int, streamWindowTarget: Int,
    outboundHighWatermark: Int = 8196, outboundLowWatermark: Int = 4092
  ) {
    self.accept = accept
    self.tracker = tracker
    self.connectionWindow = HTTP2InboundWindow(target: connectionWindowTarget)
    self.streamWindowTarget = streamWindowTarget
    self.outboundHighWatermark = outboundHighWatermark
    self.outboundLowWatermark = outboundLowWatermark
  }

  /// The streams open now (tests and metrics).
  var openStreams: Int { streams.count }

  /// The settings a new stream starts with.
  var streamSettings: HTTP2FrameStream.Settings {
    HTTP2FrameStream.Settings(
      windowTarget: streamWindowTarget, highWatermark: outboundHighWatermark, lowWatermark: outboundLowWatermark,
      parentWritable: isWritable)
  }

  /// Client: a new stream on this connection, or nil when it takes no more (closed, or out of stream IDs).
  /// Nothing is sent until its first write.
  func makeStream(scheme: String = "http") -> HTTP2UpstreamStream? {
    guard accept == nil, isOpen, let context else { return nil }
    return HTTP2UpstreamStream(connection: self, eventLoop: context.eventLoop, scheme: scheme)
  }

  // MARK: Channel events

  func handlerAdded(context: ChannelHandlerContext) {
    self.context = context
    isOpen = context.channel.isActive
    isWritable = context.channel.isWritable
  }

  func handlerRemoved(context: ChannelHandlerContext) {
    closeAll()
    self.context = nil
    isOpen = false
  }

  func channelActive(context: ChannelHandlerContext) {
    isOpen = true
    context.fireChannelActive()
  }

  func channelInactive(context: ChannelHandlerContext) {
    isOpen = false
    closeAll()
    context.fireChannelInactive()
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    let frame = unwrapInboundIn(data)
    let id = frame.streamID
    if id == .rootStream {
      // The peer is going away: no new stream starts here (one made and not yet sent fails as refused, and is
      // sent again elsewhere).
      if case .goAway = frame.payload { isOpen = false }
      context.fireChannelRead(data)
      return
    }
    reading = true
    let stream: HTTP2FrameStream
    if let known = streams[id] {
      stream = known
    } else if let accept, id >= nextStreamID, case .headers = frame.payload {
      // A stream the client opens (swift-nio-http2 has checked its ID and the concurrency limit).
      nextStreamID = HTTP2StreamID(Int(id) + 1)
      guard let accepted = accept(self, id) else {
        writeFrame(HTTP2Frame(streamID: id, payload: .rstStream(.refusedStream)))
        return
      }
      accepted.id = id
      streams.insert(accepted)
      tracker?.streamCreated(id)
      stream = accepted
    } else {
      // A frame for a stream this side already let go of (reset, cancelled): nothing to tell.
      return
    }
    if !stream.inReadList {
      stream.inReadList = true
      streamsRead.append(stream)
    }
    stream.received(frame.payload)
  }

  func channelReadComplete(context: ChannelHandlerContext) {
    reading = false
    while let stream = streamsRead.popLast() {
      stream.inReadList = false
      stream.readCompleted()
    }
    if flushPending {
      flushPending = false
      context.flush()
    }
    context.fireChannelReadComplete()
  }

  func channelWritabilityChanged(context: ChannelHandlerContext) {
    isWritable = context.channel.isWritable
    for stream in streams.all { stream.parentWritabilityChanged(isWritable) }
    context.fireChannelWritabilityChanged()
  }

  /// swift-nio-http2's events, three or so a request: told apart by their type first, then cast once (a chain
  /// of `as` patterns made two failed dynamic casts an event on average, about 300 instructions each). The
  /// proxy's own connection code (``HTTP2ConnectionHandler``) calls the same methods directly instead.
  func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    let type = ObjectIdentifier(Swift.type(of: event))
    if type == Self.windowUpdated, let window = Self.exactly(event, as: NIOHTTP2WindowUpdatedEvent.self) {
      guard let size = window.inboundWindowSize else { return }
      inboundWindowChanged(stream: window.streamID, to: size)
    } else if type == Self.streamClosed, let closed = Self.exactly(event, as: StreamClosedEvent.self) {
      streamClosed(closed.streamID, reason: closed.reason)
    } else if type == Self.streamCreated {
      return
    } else if let change = event as? NIOHTTP2BulkStreamWindowChangeEvent {
      initialInboundWindowChanged(by: change.delta)
    } else {
      context.fireUserInboundEventTriggered(event)
    }
  }

  /// `value` as `Wanted` when that is exactly its type, without the runtime's dynamic cast (`as?` from `Any`
  /// unwraps the existential and searches conformances: about 250 instructions, for two events a request).
  /// Called with an `Any`, `value` is opened to its dynamic type (SE-0352), so `Value` is that type.
  @inline(__always)
  private static func exactly<Value, Wanted>(_ value: Value, as wanted: Wanted.Type) -> Wanted? {
    Value.self == Wanted.self ? unsafeBitCast(value, to: Wanted.self) : nil
  }

  private static let windowUpdated = ObjectIdentifier(NIOHTTP2WindowUpdatedEvent.self)
  private static let streamClosed = ObjectIdentifier(StreamClosedEvent.self)
  private static let streamCreated = ObjectIdentifier(NIOHTTP2StreamCreatedEvent.self)

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    if let streamError = error as? NIOHTTP2Errors.StreamError {
      // One stream's (swift-nio-http2 resets it): its request fails; the error goes on to be logged.
      streams[streamError.streamID]?.failed(streamError.baseError)
      context.fireErrorCaught(streamError.baseError)
      return
    }
    context.fireErrorCaught(error)
  }

  // MARK: HTTP2ConnectionDelegate

  func inboundWindowChanged(stream id: HTTP2StreamID, to size: Int) {
    if id == .rootStream {
      if let increment = connectionWindow.newWindowSize(size) {
        writeFrame(HTTP2Frame(streamID: .rootStream, payload: .windowUpdate(windowSizeIncrement: increment)))
      }
    } else {
      streams[id]?.inboundWindowChanged(to: size)
    }
  }

  func streamClosed(_ id: HTTP2StreamID, reason: HTTP2ErrorCode?) {
    if let stream = streams.remove(id) {
      tracker?.streamClosed(id)
      stream.closed(reason: reason)
    }
  }

  func initialInboundWindowChanged(by delta: Int) {
    streamWindowTarget += delta
    for stream in streams.all { stream.initialWindowChanged(by: delta) }
  }

  // MARK: NIOHTTP2FrameDelegate

  /// `NIOHTTP2Handler` wrote `frame` to the network: a DATA frame's bytes no longer count against its stream's
  /// writability.
  func wroteFrame(_ frame: HTTP2Frame) {
    guard case .data(let data) = frame.payload else { return }
    streams[frame.streamID]?.wroteBytes(data.data.readableBytes)
  }

  // MARK: For the streams

  /// Writes `payload` for `stream`; a client's stream gets its ID with its first frame.
  func write(_ payload: HTTP2Frame.FramePayload, for stream: HTTP2FrameStream, promise: EventLoopPromise<Void>?) {
    guard let context else {
      promise?.fail(ChannelError.ioOnClosedChannel)
      // A stream made before the connection went away has never been told: tell it now, or it waits forever.
      if stream.id == nil { stream.failedToOpen() }
      return
    }
    let id: HTTP2StreamID
    if let known = stream.id {
      id = known
    } else {
      guard isOpen, nextStreamID <= .maxID else {
        promise?.fail(ChannelError.ioOnClosedChannel)
        stream.failedToOpen()
        return
      }
      id = nextStreamID
      stream.id = id
      streams.insert(stream)
      let next = Int(id) + 2
      if next > Int(HTTP2StreamID.maxID) {
        // Out of stream IDs: this connection takes no new stream; the pool opens another.
        isOpen = false
        nextStreamID = .maxID
      } else {
        nextStreamID = HTTP2StreamID(next)
      }
    }
    context.write(wrapOutboundOut(HTTP2Frame(streamID: id, payload: payload)), promise: promise)
  }

  /// A frame of the connection's own (WINDOW_UPDATE, RST_STREAM): flushed at the end of the read when inside
  /// one, else now.
  func writeFrame(_ frame: HTTP2Frame) {
    guard let context else { return }
    context.write(wrapOutboundOut(frame), promise: nil)
    flush()
  }

  func flush() {
    guard let context else { return }
    if reading {
      flushPending = true
    } else {
      context.flush()
    }
  }

  /// `stream` is done on this side (cancelled, reset, or it could not open): it gets no more frames.
  func forget(_ stream: HTTP2FrameStream) {
    guard let id = stream.id, streams[id] === stream else { return }
    streams.remove(id)
    tracker?.streamClosed(id)
  }

  var remoteAddress: SocketAddress? { context?.channel.remoteAddress }

  private func closeAll() {
    guard streams.count > 0 else { return }
    let all = streams.all
    streams = HTTP2StreamTable()
    for stream in all {
      if let id = stream.id { tracker?.streamClosed(id) }
      stream.closed(reason: nil)
    }
  }
}

/// One stream of an ``HTTP2StreamsHandler``'s connection, without a channel: its flow control and
/// back-pressure (what a stream channel did), the frames themselves read and written by a subclass
/// (``HTTP2UpstreamStream``, ``HTTP2DownstreamStream``).
///
/// Reading can be paused (the other side of the proxy reads slowly): frames received meanwhile are held, and
/// their bytes are not given back to the peer until they are read. A stream is unwritable while the high
/// watermark of its DATA waits to be sent, or while its connection is unwritable.
class HTTP2FrameStream {
  struct Settings {
    var windowTarget: Int
    var highWatermark: Int
    var lowWatermark: Int
    var parentWritable: Bool
  }

  let connection: HTTP2StreamsHandler
  let eventLoop: any EventLoop
  /// A client's stream gets it with its first frame; nil before. Set by its connection only.
  final var id: HTTP2StreamID?
  private(set) var isClosed = false
  fileprivate var inReadList = false

  private var window: HTTP2InboundWindow
  /// Reading is paused: frames wait here, their bytes not given back to the peer. A ring, taken from the front
  /// in O(1): a peer may send many small DATA frames while reading is paused. Made only when a frame is held:
  /// an empty ring allocates, after a look-up of its storage's type metadata, about 1,300 instructions a
  /// stream (Benchmarks/load/instructions.sh).
  private var paused = false
  private var held = HeldFrames()
  /// DATA bytes written and not yet sent by `NIOHTTP2Handler` (flow control or a slow connection).
  private var unsentBytes = 0
  private let highWatermark: Int
  private let lowWatermark: Int
  private var parentWritable: Bool
  private var ownWritable = true
  private(set) var isWritable: Bool

  init(connection: HTTP2StreamsHandler, eventLoop: any EventLoop) {
    let settings = connection.streamSettings
    self.connection = connection
    self.eventLoop = eventLoop
    self.window = HTTP2InboundWindow(target: settings.windowTarget)
    self.highWatermark = settings.highWatermark
    self.lowWatermark = settings.lowWatermark
    self.parentWritable = settings.parentWritable
    self.isWritable = settings.parentWritable
  }

  var remoteAddress: SocketAddress? { connection.remoteAddress }

  // MARK: What a subclass does

  /// Reads one frame (reading is on): what it becomes goes to the stream's request.
  func read(_ payload: HTTP2Frame.FramePayload) {}
  /// The end of a read of the connection that brought this stream frames, or of delivering held ones: what they
  /// became is flushed on, also when reading paused in the middle of them (what was delivered before the pause
  /// still has to go).
  func readCompleted() {}
  func writabilityChanged(_ writable: Bool) {}
  /// An error of this stream (swift-nio-http2's stream error); the stream's end follows.
  func failed(_ error: any Error) {}
  /// The stream has ended, with `error` when it did not end cleanly; nothing more comes.
  func ended(error: (any Error)?) {}

  // MARK: For a subclass

  /// Sends a frame of this stream; a DATA frame's bytes count against its writability until sent.
  final func send(_ frame: HTTP2Frame.FramePayload, promise: EventLoopPromise<Void>?) {
    if case .data(let data) = frame {
      let size = data.data.readableBytes
      if size > 0 {
        unsentBytes += size
        if ownWritable, unsentBytes >= highWatermark {
          ownWritable = false
          writabilityMayHaveChanged()
        }
      }
    }
    connection.write(frame, for: self, promise: promise)
  }

  /// Sends the frames a part completed, in order; the second only while the stream is open (the first may
  /// have ended it).
  final func send(_ frames: HTTP2FramesToSend) {
    if let first = frames.first { send(first.frame, promise: first.promise) }
    if let second = frames.second, !isClosed { send(second.frame, promise: second.promise) }
  }

  /// Pauses or resumes reading (back-pressure from the other side of the proxy): while paused, frames are held
  /// and the peer's window is not refilled for them.
  final func setReading(_ on: Bool) {
    guard paused == on else { return }
    paused = !on
    if on { deliverHeld() }
  }

  /// Resets the stream from this side with `code` (a stream on the network only), and ends it with `error`.
  final func reset(_ code: HTTP2ErrorCode, error: (any Error)?) {
    guard !isClosed else { return }
    if let id {
      connection.forget(self)
      connection.writeFrame(HTTP2Frame(streamID: id, payload: .rstStream(code)))
    }
    finish(error: error)
  }

  /// Ends the stream without a frame.
  final func finish(error: (any Error)?) {
    guard !isClosed else { return }
    isClosed = true
    held = HeldFrames()
    ended(error: error)
  }

  // MARK: From the connection

  fileprivate final func received(_ payload: HTTP2Frame.FramePayload) {
    if paused || !held.isEmpty {
      if case .data(let data) = payload { window.bufferedFrameReceived(size: data.data.readableBytes) }
      held.append(payload)
      return
    }
    if !isClosed { read(payload) }
  }

  private func deliverHeld() {
    while !paused, !held.isEmpty, !isClosed {
      let payload = held.removeFirst()
      read(payload)
      if case .data(let data) = payload, let increment = window.bufferedFrameEmitted(size: data.data.readableBytes) {
        refill(increment)
      }
    }
    if !isClosed { readCompleted() }
  }

  fileprivate final func inboundWindowChanged(to size: Int) {
    if let increment = window.newWindowSize(size) { refill(increment) }
  }

  fileprivate final func initialWindowChanged(by delta: Int) {
    if let increment = window.initialWindowSizeChanged(delta: delta) { refill(increment) }
  }

  private func refill(_ increment: Int) {
    guard let id, !isClosed else { return }
    connection.writeFrame(HTTP2Frame(streamID: id, payload: .windowUpdate(windowSizeIncrement: increment)))
  }

  fileprivate final func wroteBytes(_ count: Int) {
    unsentBytes -= count
    if !ownWritable, unsentBytes < lowWatermark {
      ownWritable = true
      writabilityMayHaveChanged()
    }
  }

  fileprivate final func parentWritabilityChanged(_ writable: Bool) {
    parentWritable = writable
    writabilityMayHaveChanged()
  }

  private func writabilityMayHaveChanged() {
    let now = ownWritable && parentWritable
    guard now != isWritable else { return }
    isWritable = now
    writabilityChanged(now)
  }

  /// The stream closed on the network (both ends done, or reset; `reason` is the reset's code), or the
  /// connection went away (nil). Frames still held are read first, as a stream channel delivers its pending
  /// reads before it closes.
  fileprivate final func closed(reason: HTTP2ErrorCode?) {
    guard !isClosed else { return }
    paused = false
    if !held.isEmpty { deliverHeld() }
    guard !isClosed else { return }
    if let reason, let id {
      finish(error: NIOHTTP2Errors.streamClosed(streamID: id, errorCode: reason))
    } else {
      finish(error: nil)
    }
  }

  /// The connection could not give the stream an ID (closed, or out of IDs).
  fileprivate final func failedToOpen() {
    finish(error: ChannelError.ioOnClosedChannel)
  }
}

/// The open streams of one connection by ID, looked up for every frame without hashing: a slot per ID in a
/// power-of-two array (the ID's low bits; a connection's open streams are a window of recent IDs), and a
/// dictionary for the rare stream whose slot a longer-lived one holds. The array grows to keep at most half its
/// slots full. A `Dictionary` hashed the ID with SipHash at every lookup, insertion and removal (about 1,000
/// instructions a request on each side of the hop).
struct HTTP2StreamTable {
  private var slots: ContiguousArray<HTTP2FrameStream?>
  private var overflow: [HTTP2StreamID: HTTP2FrameStream] = [:]
  private(set) var count = 0

  init(capacity: Int = 32) {
    slots = ContiguousArray(repeating: nil, count: capacity)
  }

  private func slot(_ id: HTTP2StreamID) -> Int { Int(id) & (slots.count - 1) }

  subscript(id: HTTP2StreamID) -> HTTP2FrameStream? {
    if let stream = slots[slot(id)], stream.id == id { return stream }
    return overflow.isEmpty ? nil : overflow[id]
  }

  /// Adds `stream`, which has its ID.
  mutating func insert(_ stream: HTTP2FrameStream) {
    guard let id = stream.id else { return }
    if count >= slots.count / 2 { grow() }
    let index = slot(id)
    if let holder = slots[index], holder.id != id {
      overflow[id] = stream
    } else {
      slots[index] = stream
    }
    count += 1
  }

  @discardableResult
  mutating func remove(_ id: HTTP2StreamID) -> HTTP2FrameStream? {
    let index = slot(id)
    if let stream = slots[index], stream.id == id {
      slots[index] = nil
      count -= 1
      return stream
    }
    guard !overflow.isEmpty, let stream = overflow.removeValue(forKey: id) else { return nil }
    count -= 1
    return stream
  }

  /// Every stream in the table.
  var all: [HTTP2FrameStream] { slots.compactMap { $0 } + overflow.values }

  private mutating func grow() {
    let streams = all
    self = HTTP2StreamTable(capacity: slots.count * 2)
    for stream in streams { insert(stream) }
  }
}

/// The frames a paused stream holds, in order; no storage until the first.
private struct HeldFrames {
  private var frames: CircularBuffer<HTTP2Frame.FramePayload>?

  var isEmpty: Bool { frames?.isEmpty ?? true }

  mutating func append(_ frame: HTTP2Frame.FramePayload) {
    if frames == nil { frames = CircularBuffer(initialCapacity: 4) }
    frames!.append(frame)
  }

  mutating func removeFirst() -> HTTP2Frame.FramePayload { frames!.removeFirst() }
}

/// When to give a peer back the window of data read: the rule of swift-nio-http2's own inbound window manager.
/// Nothing while the window is at least half its target; then back up to the target. Bytes received but held
/// (reading paused) do not count as read.
struct HTTP2InboundWindow {
  private var target: Int
  /// The window size as last reported.
  private var last: Int?
  /// Bytes of DATA frames received and not yet handed on.
  private var buffered = 0

  init(target: Int) { self.target = target }

  mutating func newWindowSize(_ size: Int) -> Int? {
    last = size
    return increment(window: size + buffered)
  }

  mutating func initialWindowSizeChanged(delta: Int) -> Int? {
    target += delta
    guard let last else { return nil }
    return newWindowSize(last + delta)
  }

  mutating func bufferedFrameReceived(size: Int) { buffered += size }

  mutating func bufferedFrameEmitted(size: Int) -> Int? {
    buffered -= size
    guard let last else { return nil }
    return increment(window: last + buffered)
  }

  private func increment(window: Int) -> Int? {
    if window >= target { return nil }
    if window >= 0 {
      let increment = target - window
      return increment >= window ? increment : nil
    }
    return min(-window + target, Int(Int32.max))
  }
}
