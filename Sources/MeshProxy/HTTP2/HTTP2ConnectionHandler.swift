import NIOCore
import NIOHPACK
import NIOHTTP2

#if canImport(Glibc)
import Glibc
#endif

/// What an ``HTTP2ConnectionHandler`` tells the handler of its streams (``HTTP2StreamsHandler``), by direct
/// calls rather than as events boxed in `Any` through the pipeline.
protocol HTTP2ConnectionDelegate: AnyObject {
  /// `frame` was written to the connection's bytes: a DATA frame's bytes no longer wait.
  func wroteFrame(_ frame: HTTP2Frame)
  /// The window this side gives the peer for stream `id` (or the connection, stream 0) is now `size`.
  func inboundWindowChanged(stream id: HTTP2StreamID, to size: Int)
  /// Stream `id` closed: both ends done (nil), or reset with `reason` by either side.
  func streamClosed(_ id: HTTP2StreamID, reason: HTTP2ErrorCode?)
  /// The peer acknowledged this side's new SETTINGS_INITIAL_WINDOW_SIZE: every stream's window moved by `delta`.
  func initialInboundWindowChanged(by delta: Int)
}

/// One HTTP/2 connection (RFC 9113) as bytes in and `HTTP2Frame` values out, and back: the proxy's own connection
/// code for mesh hops, in the place of swift-nio-http2's `NIOHTTP2Handler` beneath ``HTTP2StreamsHandler``.
/// It reads with ``HTTP2FrameReader``, writes with ``HTTP2FrameWriter`` (``HPACKBlockEncoder``), and keeps:
/// - the preface: the client's magic and SETTINGS first; the peer's first frame must be SETTINGS;
/// - SETTINGS both ways: the peer's applied at once and acknowledged, this side's applied when acknowledged;
///   PING answered; GOAWAY sent and received (streams above a received GOAWAY's last stream close as refused);
/// - stream states (idle, open, half closed, closed): frames where RFC 9113 section 5.1 does not allow them
///   are stream or connection errors; frames for a stream closed a moment ago are ignored, as the peer may
///   have sent them before it learned;
/// - this side's SETTINGS_MAX_CONCURRENT_STREAMS (a stream above it is refused with REFUSED_STREAM, which
///   clients send again) and the peer's (a new stream beyond it waits, with its frames, until one closes);
/// - flow control both ways: receive windows checked (FLOW_CONTROL_ERROR), and the sizes reported to the
///   delegate, which sends WINDOW_UPDATE as it hands the data on; DATA sent as the peer's windows allow
///   (``HTTP2SendWindows``);
/// - a budget of RST_STREAM frames the peer may send in a period (the rapid-reset attack): beyond it, GOAWAY
///   ENHANCE_YOUR_CALM;
/// - a budget of the peer's stream errors found here over the connection's life (swift-nio-http2's
///   "glitches"): DATA or HEADERS on a stream the peer had ended, a stream's window overrun, a stream past this
///   side's concurrency limit, a malformed frame on a stream. Each resets only its stream, so a peer could go
///   on making them for ever; beyond the budget, GOAWAY ENHANCE_YOUR_CALM. Resets the streams send are not
///   counted: the proxy passes an upstream's reset on with its code, which says nothing of this peer.
///
/// Frames written go into one buffer, written to the channel at each flush: the frames of a read's responses,
/// and the acknowledgements it caused, leave in one write. Used only on the connection's event loop.
final class HTTP2ConnectionHandler: ChannelDuplexHandler {
  typealias InboundIn = ByteBuffer
  typealias InboundOut = HTTP2Frame
  typealias OutboundIn = HTTP2Frame
  typealias OutboundOut = ByteBuffer

  enum Mode { case client, server }

  struct Configuration {
    /// The SETTINGS this side sends first (swift-nio-http2's defaults).
    var settings: [HTTP2Setting] = [
      HTTP2Setting(parameter: .maxConcurrentStreams, value: 100),
      HTTP2Setting(parameter: .maxHeaderListSize, value: HPACKDecoder.defaultMaxHeaderListSize),
    ]
    /// RST_STREAM frames the peer may send per ``resetPeriod``.
    var resetBudget = 200
    var resetPeriod: TimeAmount = .seconds(30)
    /// The most bytes one received header block may take, with its CONTINUATION frames.
    var maxHeaderBlockSize = 65536
    /// Stream errors of the peer's the connection may see in its life (swift-nio-http2's
    /// `maximumConnectionGlitches`, 200 unless set).
    var glitchBudget = 200

    init() {}
  }

  private struct Stream {
    /// This side may still send on it (no END_STREAM sent).
    var localOpen = true
    /// The peer may still send on it (no END_STREAM received).
    var remoteOpen = true
    /// What the peer may still send on it.
    var receiveWindow: Int
    /// Opened by this side.
    let local: Bool
  }

  /// A stream this side opened while the peer's concurrency limit was reached: its frames, in order.
  private struct WaitingStream {
    var id: HTTP2StreamID
    var frames: [(payload: HTTP2Frame.FramePayload, promise: EventLoopPromise<Void>?)]
  }

  static let clientMagic = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

  private let mode: Mode
  private let configuration: Configuration
  private weak var delegate: (any HTTP2ConnectionDelegate)?
  private var context: ChannelHandlerContext?

  private var reader: HTTP2FrameReader
  private var writer = HTTP2FrameWriter()
  private var windows = HTTP2SendWindows<EventLoopPromise<Void>>()
  private var streams = HTTP2StreamSlots<Stream>()
  private var waiting = CircularBuffer<WaitingStream>()

  /// Server: bytes of the client's magic still expected (24 at first).
  private var magicLeft: Int
  private var prefaceSent = false
  private var settingsReceived = false
  /// This side's SETTINGS sent and not yet acknowledged, oldest first.
  private var unacknowledged: [[HTTP2Setting]] = []
  private var localInitialWindow = 65535
  private var localMaxStreams = Int.max
  /// The peer's SETTINGS_MAX_CONCURRENT_STREAMS; until its SETTINGS come, the 100 RFC 9113 recommends as the
  /// least a peer allows, so that a burst of new streams written at once does not meet REFUSED_STREAM.
  private var peerMaxStreams = 100
  private var connectionReceiveWindow = 65535

  private var highestLocal: HTTP2StreamID = .rootStream
  private var highestRemote: HTTP2StreamID = .rootStream
  private var localStreams = 0
  private var remoteStreams = 0
  private var goAwaySent: HTTP2StreamID?
  private var goAwayReceived: HTTP2StreamID?

  private var resets = 0
  /// The peer's stream errors so far (``Configuration/glitchBudget``).
  private var glitches = 0
  private var resetPeriodStart = NIODeadline.uptimeNanoseconds(0)

  /// Frames written and not yet handed to the channel, and their writes' promises.
  private var output = ByteBuffer()
  private var promises: [EventLoopPromise<Void>] = []
  private var closed = false

  init(mode: Mode, delegate: (any HTTP2ConnectionDelegate)?, configuration: Configuration = Configuration()) {
    self.mode = mode
    self.delegate = delegate
    self.configuration = configuration
    self.magicLeft = mode == .server ? Self.clientMagic.utf8.count : 0
    var reader = HTTP2FrameReader(
      maxHeaderListSize: configuration.settings.last { $0.parameter == .maxHeaderListSize }.map(\.value)
        ?? HPACKDecoder.defaultMaxHeaderListSize)
    reader.maxHeaderBlockSize = configuration.maxHeaderBlockSize
    self.reader = reader
  }

  /// Streams open now (tests).
  var openStreams: Int { streams.count }

  // MARK: Channel events

  func handlerAdded(context: ChannelHandlerContext) {
    self.context = context
    output = context.channel.allocator.buffer(capacity: 1024)
    if context.channel.isActive { sendPreface(context: context) }
  }

  func handlerRemoved(context: ChannelHandlerContext) {
    failEverything(ChannelError.ioOnClosedChannel)
    self.context = nil
  }

  func channelActive(context: ChannelHandlerContext) {
    sendPreface(context: context)
    context.fireChannelActive()
  }

  func channelInactive(context: ChannelHandlerContext) {
    failEverything(ChannelError.ioOnClosedChannel)
    context.fireChannelInactive()
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    guard !closed else { return }
    var bytes = unwrapInboundIn(data)
    if magicLeft > 0 {
      let magic = Self.clientMagic.utf8
      let offset = magic.count - magicLeft
      let count = min(magicLeft, bytes.readableBytes)
      guard let got = bytes.readBytes(length: count), got.elementsEqual(magic.dropFirst(offset).prefix(count)) else {
        closed = true
        context.fireErrorCaught(NIOHTTP2Errors.badClientMagic())
        context.close(promise: nil)
        return
      }
      magicLeft -= count
      if bytes.readableBytes == 0 { return }
    }
    reader.append(bytes)
    while !closed {
      do {
        guard let (frame, length) = try reader.nextFrame() else { break }
        try received(frame, flowControlledLength: length, context: context)
      } catch {
        if let stream = error.stream {
          resetStream(stream, error.code)
          context.fireErrorCaught(error)
          do {
            try countGlitch()
          } catch {
            connectionError(error, context: context)
          }
        } else {
          connectionError(error, context: context)
        }
      }
    }
  }

  func channelReadComplete(context: ChannelHandlerContext) {
    context.fireChannelReadComplete()
    if output.readableBytes > 0 { writeOutput(context: context) }
  }

  // MARK: Frames read

  private func received(_ frame: HTTP2Frame, flowControlledLength: Int, context: ChannelHandlerContext) throws(HTTP2WireError) {
    let id = frame.streamID
    if !settingsReceived {
      guard case .settings(.settings) = frame.payload else {
        throw .connection(.protocolError, "the peer's first frame must be SETTINGS")
      }
      settingsReceived = true
      // No limit unless these SETTINGS name one.
      peerMaxStreams = Int.max
    }
    switch frame.payload {
    case .data(let data):
      connectionReceiveWindow -= flowControlledLength
      guard connectionReceiveWindow >= 0 else {
        throw .connection(.flowControlError, "DATA beyond the connection's window")
      }
      if let stream = streams[id] {
        guard stream.remoteOpen else {
          try peerStreamError(id, .streamClosed)
          break
        }
        let window = stream.receiveWindow - flowControlledLength
        streams.update(id) { $0.receiveWindow = window }
        guard window >= 0 else {
          try peerStreamError(id, .flowControlError)
          break
        }
        context.fireChannelRead(wrapInboundOut(frame))
        delegate?.inboundWindowChanged(stream: id, to: window)
        if data.endStream { remoteEnded(id) }
      } else {
        try checkNotIdle(id, "DATA")
      }
      delegate?.inboundWindowChanged(stream: .rootStream, to: connectionReceiveWindow)
    case .headers(let headers):
      if let stream = streams[id] {
        guard stream.remoteOpen else {
          try peerStreamError(id, .streamClosed)
          break
        }
        context.fireChannelRead(wrapInboundOut(frame))
        if headers.endStream { remoteEnded(id) }
      } else if isRemoteParity(id), id > highestRemote {
        highestRemote = id
        if let last = goAwaySent, id > last {
          emit(HTTP2Frame(streamID: id, payload: .rstStream(.refusedStream)), promise: nil)
          break
        }
        guard remoteStreams < localMaxStreams else {
          emit(HTTP2Frame(streamID: id, payload: .rstStream(.refusedStream)), promise: nil)
          try countGlitch()
          break
        }
        streams[id] = Stream(receiveWindow: localInitialWindow, local: false)
        remoteStreams += 1
        windows.open(id)
        context.fireChannelRead(wrapInboundOut(frame))
        if headers.endStream { remoteEnded(id) }
      } else if !isRemoteParity(id) && id > highestLocal {
        throw .connection(.protocolError, "HEADERS on stream \(id), which this side has not opened")
      }
    // Otherwise a stream closed a moment ago: ignored.
    case .rstStream(let code):
      try checkNotIdle(id, "RST_STREAM")
      try countReset()
      if streams[id] != nil { closeStream(id, reason: code) }
    case .windowUpdate(let increment):
      do {
        try windows.windowUpdate(increment, on: id)
      } catch {
        guard let stream = error.stream else { throw error }
        try peerStreamError(stream, error.code)
        break
      }
      if id != .rootStream, streams[id] == nil { try checkNotIdle(id, "WINDOW_UPDATE") }
      sendWaiting()
    case .settings(.settings(let settings)):
      try applyPeerSettings(settings)
      emit(HTTP2Frame(streamID: .rootStream, payload: .settings(.ack)), promise: nil)
      context.fireChannelRead(wrapInboundOut(frame))
    case .settings(.ack):
      guard !unacknowledged.isEmpty else {
        throw .connection(.protocolError, "a SETTINGS acknowledgement for no SETTINGS sent")
      }
      applyLocalSettings(unacknowledged.removeFirst())
      context.fireChannelRead(wrapInboundOut(frame))
    case .ping(let data, let ack):
      if !ack { emit(HTTP2Frame(streamID: .rootStream, payload: .ping(data, ack: true)), promise: nil) }
      context.fireChannelRead(wrapInboundOut(frame))
    case .goAway(let last, _, _):
      goAwayReceived = min(goAwayReceived ?? last, last)
      context.fireChannelRead(wrapInboundOut(frame))
      refuseStreams(above: last)
    case .priority, .pushPromise, .alternativeService, .origin:
      // PRIORITY is advice this side does not follow; the reader refuses PUSH_PROMISE and skips the others.
      break
    }
  }

  /// A frame other than HEADERS for a stream not open: for one never opened (idle), a connection error.
  private func checkNotIdle(_ id: HTTP2StreamID, _ type: String) throws(HTTP2WireError) {
    let highest = isRemoteParity(id) ? highestRemote : highestLocal
    if id > highest { throw .connection(.protocolError, "\(type) on stream \(id), which is idle") }
  }

  private func isRemoteParity(_ id: HTTP2StreamID) -> Bool {
    (Int32(id) & 1 == 1) == (mode == .server)
  }

  private func applyPeerSettings(_ settings: [HTTP2Setting]) throws(HTTP2WireError) {
    for setting in settings {
      switch setting.parameter {
      case .headerTableSize: writer.encoder.peerAllows(tableSize: setting.value)
      case .initialWindowSize: try windows.setInitialWindow(setting.value)
      case .maxFrameSize: writer.maxFrameSize = setting.value
      case .maxConcurrentStreams: peerMaxStreams = setting.value
      default: break
      }
    }
    openWaiting()
    sendWaiting()
  }

  private func applyLocalSettings(_ settings: [HTTP2Setting]) {
    for setting in settings {
      switch setting.parameter {
      case .headerTableSize: reader.allowTableSize(setting.value)
      case .maxFrameSize: reader.maxFrameSize = setting.value
      case .initialWindowSize:
        let delta = setting.value - localInitialWindow
        localInitialWindow = setting.value
        guard delta != 0 else { continue }
        streams.updateAll { $0.receiveWindow += delta }
        delegate?.initialInboundWindowChanged(by: delta)
      default: break
      }
    }
  }

  /// A stream error of the peer's found here: the stream is reset with `code`, and it counts against the
  /// glitch budget.
  private func peerStreamError(_ id: HTTP2StreamID, _ code: HTTP2ErrorCode) throws(HTTP2WireError) {
    resetStream(id, code)
    try countGlitch()
  }

  private func countGlitch() throws(HTTP2WireError) {
    glitches += 1
    if glitches > configuration.glitchBudget {
      throw .connection(.enhanceYourCalm, "more than \(configuration.glitchBudget) stream errors on this connection")
    }
  }

  private func countReset() throws(HTTP2WireError) {
    let now = NIODeadline.now()
    if now - resetPeriodStart > configuration.resetPeriod {
      resetPeriodStart = now
      resets = 0
    }
    resets += 1
    if resets > configuration.resetBudget {
      throw .connection(
        .enhanceYourCalm, "more than \(configuration.resetBudget) RST_STREAM frames in \(configuration.resetPeriod)")
    }
  }

  // MARK: Frames written

  func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
    guard !closed else {
      promise?.fail(ChannelError.ioOnClosedChannel)
      return
    }
    send(unwrapOutboundIn(data), promise: promise)
  }

  func flush(context: ChannelHandlerContext) {
    sendWaiting()
    writeOutput(context: context)
  }

  private func send(_ frame: HTTP2Frame, promise: EventLoopPromise<Void>?) {
    let id = frame.streamID
    if id == .rootStream {
      switch frame.payload {
      case .settings(.settings(let settings)):
        unacknowledged.append(settings)
        for setting in settings where setting.parameter == .maxConcurrentStreams { localMaxStreams = setting.value }
      case .goAway(let last, _, _):
        goAwaySent = min(goAwaySent ?? last, last)
      case .windowUpdate(let increment):
        connectionReceiveWindow += increment
      default:
        break
      }
      emit(frame, promise: promise)
      return
    }
    if let index = waitingIndex(id) {
      if case .rstStream = frame.payload {
        // Never sent: nothing to reset on the network.
        let dropped = waiting.remove(at: index)
        for (_, promise) in dropped.frames {
          promise?.fail(NIOHTTP2Errors.streamClosed(streamID: id, errorCode: .cancel))
        }
        promise?.succeed()
        delegate?.streamClosed(id, reason: .cancel)
      } else {
        waiting[index].frames.append((frame.payload, promise))
      }
      return
    }
    switch frame.payload {
    case .rstStream(let code):
      guard streams[id] != nil else {
        // Closed already (both ends done, or reset by the peer): the peer needs no reset.
        promise?.succeed()
        return
      }
      emit(frame, promise: promise)
      closeStream(id, reason: code)
    case .windowUpdate(let increment):
      guard streams[id]?.remoteOpen == true else {
        promise?.succeed()
        return
      }
      streams.update(id) { $0.receiveWindow += increment }
      emit(frame, promise: promise)
    case .priority:
      promise?.succeed()
    case .headers, .data:
      if let stream = streams[id] {
        guard stream.localOpen else {
          promise?.fail(NIOHTTP2Errors.streamClosed(streamID: id, errorCode: .streamClosed))
          return
        }
        if windows.sendNow(frame.payload, on: id, maxFrameSize: writer.maxFrameSize) {
          emit(frame, promise: promise)
        } else {
          _ = windows.enqueue(frame.payload, tag: promise, on: id)
        }
      } else if case .headers = frame.payload, !isRemoteParity(id), id > highestLocal {
        highestLocal = id
        if goAwayReceived != nil {
          promise?.fail(NIOHTTP2Errors.createdStreamAfterGoaway())
          delegate?.streamClosed(id, reason: .refusedStream)
        } else if localStreams >= peerMaxStreams || !waiting.isEmpty {
          waiting.append(WaitingStream(id: id, frames: [(frame.payload, promise)]))
        } else {
          openLocal(id)
          emit(frame, promise: promise)
        }
      } else {
        promise?.fail(NIOHTTP2Errors.noSuchStream(streamID: id))
      }
    default:
      emit(frame, promise: promise)
    }
  }

  /// Where stream `id` is among the streams waiting to open, if it is: they wait in the order of their IDs, so
  /// a frame of an open stream is told by one comparison, and one of a waiting stream found by halving (a flood
  /// of new streams can leave thousands waiting, each writing several frames).
  private func waitingIndex(_ id: HTTP2StreamID) -> CircularBuffer<WaitingStream>.Index? {
    guard let first = waiting.first, id >= first.id, id <= waiting.last!.id else { return nil }
    var low = 0
    var high = waiting.count - 1
    while low <= high {
      let middle = (low + high) / 2
      let index = waiting.index(waiting.startIndex, offsetBy: middle)
      let found = waiting[index].id
      if found == id { return index }
      if found < id { low = middle + 1 } else { high = middle - 1 }
    }
    return nil
  }

  private func openLocal(_ id: HTTP2StreamID) {
    streams[id] = Stream(receiveWindow: localInitialWindow, local: true)
    localStreams += 1
    windows.open(id)
  }

  /// Streams that waited for the peer's concurrency limit, opened as far as it allows now.
  private func openWaiting() {
    while localStreams < peerMaxStreams, goAwayReceived == nil, let next = waiting.popFirst() {
      openLocal(next.id)
      for (payload, promise) in next.frames { send(HTTP2Frame(streamID: next.id, payload: payload), promise: promise) }
    }
  }

  /// DATA (and what waits behind it) the peer's windows allow now.
  private func sendWaiting() {
    guard windows.hasWaiting else { return }
    while let (id, payload, promise) = windows.next(maxFrameSize: writer.maxFrameSize) {
      emit(HTTP2Frame(streamID: id, payload: payload), promise: promise)
    }
  }

  /// Encodes `frame` into the output, and moves its stream's state on.
  private func emit(_ frame: HTTP2Frame, promise: EventLoopPromise<Void>?) {
    do {
      try writer.write(frame, into: &output)
    } catch {
      promise?.fail(error)
      return
    }
    if let promise { promises.append(promise) }
    switch frame.payload {
    case .data(let data):
      delegate?.wroteFrame(frame)
      if data.endStream { localEnded(frame.streamID) }
    case .headers(let headers):
      if headers.endStream { localEnded(frame.streamID) }
    default:
      break
    }
  }

  private func writeOutput(context: ChannelHandlerContext) {
    guard output.readableBytes > 0 else {
      if !promises.isEmpty { flushPromises(.success(())) }
      return
    }
    let bytes = output
    output = context.channel.allocator.buffer(capacity: max(1024, bytes.readableBytes))
    var promise: EventLoopPromise<Void>?
    if promises.count == 1 {
      promise = promises.removeFirst()
    } else if !promises.isEmpty {
      let all = promises
      promises.removeAll(keepingCapacity: true)
      promise = context.eventLoop.makePromise()
      promise!.futureResult.whenComplete { result in for promise in all { promise.completeWith(result) } }
    }
    context.write(wrapOutboundOut(bytes), promise: promise)
    context.flush()
  }

  private func flushPromises(_ result: Result<Void, any Error>) {
    let all = promises
    promises.removeAll()
    for promise in all { promise.completeWith(result) }
  }

  // MARK: Stream states

  private func localEnded(_ id: HTTP2StreamID) {
    guard var stream = streams[id] else { return }
    stream.localOpen = false
    if stream.remoteOpen { streams[id] = stream } else { closeStream(id, reason: nil) }
  }

  private func remoteEnded(_ id: HTTP2StreamID) {
    guard var stream = streams[id] else { return }
    stream.remoteOpen = false
    if stream.localOpen { streams[id] = stream } else { closeStream(id, reason: nil) }
  }

  private func closeStream(_ id: HTTP2StreamID, reason: HTTP2ErrorCode?) {
    guard let stream = streams.removeValue(forKey: id) else { return }
    if stream.local { localStreams -= 1 } else { remoteStreams -= 1 }
    for promise in windows.close(id) {
      promise.fail(NIOHTTP2Errors.streamClosed(streamID: id, errorCode: reason ?? .cancel))
    }
    delegate?.streamClosed(id, reason: reason)
    if stream.local, !waiting.isEmpty { openWaiting() }
  }

  /// A stream error of the peer's: the stream is reset with `code`.
  private func resetStream(_ id: HTTP2StreamID, _ code: HTTP2ErrorCode) {
    // A stream never opened needs no reset (RST_STREAM on an idle stream is itself a protocol error).
    guard id <= (isRemoteParity(id) ? highestRemote : highestLocal) else { return }
    emit(HTTP2Frame(streamID: id, payload: .rstStream(code)), promise: nil)
    closeStream(id, reason: code)
  }

  /// The peer's GOAWAY: streams this side opened above `last` were never processed and close as refused
  /// (sent again elsewhere); streams waiting to open never will.
  private func refuseStreams(above last: HTTP2StreamID) {
    let refused = streams.keys.filter { $0 > last && streams[$0]?.local == true }.sorted()
    for id in refused { closeStream(id, reason: .refusedStream) }
    while let next = waiting.popFirst() {
      for (_, promise) in next.frames { promise?.fail(NIOHTTP2Errors.createdStreamAfterGoaway()) }
      delegate?.streamClosed(next.id, reason: .refusedStream)
    }
  }

  /// A connection error: GOAWAY with its code, then the connection closes.
  private func connectionError(_ error: HTTP2WireError, context: ChannelHandlerContext) {
    guard !closed else { return }
    let goAway = HTTP2Frame(
      streamID: .rootStream,
      payload: .goAway(lastStreamID: highestRemote, errorCode: error.code, opaqueData: ByteBuffer(string: error.message)))
    emit(goAway, promise: nil)
    writeOutput(context: context)
    closed = true
    context.fireErrorCaught(error)
    context.close(promise: nil)
  }

  private func sendPreface(context: ChannelHandlerContext) {
    guard !prefaceSent else { return }
    prefaceSent = true
    if mode == .client { output.writeString(Self.clientMagic) }
    send(HTTP2Frame(streamID: .rootStream, payload: .settings(.settings(configuration.settings))), promise: nil)
    writeOutput(context: context)
  }

  private func failEverything(_ error: any Error) {
    closed = true
    flushPromises(.failure(error))
    for promise in windows.closeAll() { promise.fail(error) }
    while let next = waiting.popFirst() {
      for (_, promise) in next.frames { promise?.fail(error) }
    }
  }
}

extension HTTP2ConnectionHandler {
  /// Whether connections between two proxies (mutual TLS) use this handler rather than swift-nio-http2's
  /// `NIOHTTP2Handler`: yes, unless the environment variable `MESH_PROXY_HTTP2` is `nio` when the process starts
  /// (a way back while this code is new). Connections with applications and clients always use
  /// swift-nio-http2.
  static let onMeshHops: Bool = {
    guard let value = getenv("MESH_PROXY_HTTP2") else { return true }
    return String(cString: value) != "nio"
  }()
}

extension HTTP2ConnectionHandler.Configuration {
  /// A connection between two proxies: the settings `NIOHTTP2Handler` had there
  /// (`NIOHTTP2Handler.ConnectionConfiguration.proxy(meshPeer:)`): a smaller HPACK table
  /// (`meshHeaderTableSize`), the budget of resets a mesh peer may send (100,000 per 30 s), and of its stream
  /// errors (100,000 in the connection's life, as `maximumConnectionGlitches` was).
  static var meshHop: Self {
    var configuration = Self()
    configuration.settings.append(
      HTTP2Setting(parameter: .headerTableSize, value: NIOHTTP2Handler.ConnectionConfiguration.meshHeaderTableSize))
    configuration.resetBudget = 100_000
    configuration.glitchBudget = 100_000
    return configuration
  }
}
