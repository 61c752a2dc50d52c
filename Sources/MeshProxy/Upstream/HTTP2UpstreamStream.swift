import NIOCore
import NIOHTTP1
import NIOHTTP2

/// One request's stream on an upstream HTTP/2 connection (``HTTP2StreamsHandler``, client side): what a
/// stream channel with an ``HTTP2ClientStreamCodec`` was, without the channel. Request parts are written to it
/// directly (``UpstreamResponseHost``) and its response parts go to its reporter.
final class HTTP2UpstreamStream: HTTP2FrameStream, UpstreamResponseHost {
  private var state: HTTP2ClientStreamState
  /// Where the response parts and the stream's events go: the request handler's reporter (or a test's).
  var sink: (any UpstreamResponseSink)?
  var responses: UpstreamResponseReporter? {
    get { sink as? UpstreamResponseReporter }
    set { sink = newValue }
  }
  /// Called once when the stream ends, however it ends (the pool's slot).
  var onClose: (() -> Void)?
  /// The client proxy's own fields, added to the request's header block as it is made.
  var hopFields: HopFields? {
    get { state.hopFields }
    set { state.hopFields = newValue }
  }

  init(connection: HTTP2StreamsHandler, eventLoop: any EventLoop, scheme: String) {
    self.state = HTTP2ClientStreamState(scheme: scheme)
    super.init(connection: connection, eventLoop: eventLoop)
  }

  // MARK: Writing (the request handler)

  func writeDirectly(_ part: HTTPClientRequestPart, promise: EventLoopPromise<Void>?) {
    guard !isClosed else {
      promise?.fail(ChannelError.ioOnClosedChannel)
      return
    }
    do {
      send(try state.write(part, promise: promise))
    } catch {
      promise?.fail(error)
      sink?.failed(error)
      close()
    }
  }

  /// Writes what is held and flushes the connection; also once the stream has closed, which writing its last
  /// frame can do at once (what was written before still has to go).
  func flush() {
    if !isClosed, let last = state.takePending() { send(last.frame, promise: last.promise) }
    connection.flush()
  }

  /// Ends the stream from this side: a stream on the network is reset with CANCEL (as closing a stream
  /// channel does); the reporter hears of it as it would have from the channel.
  func close() {
    guard !isClosed else { return }
    state.takePending()?.promise?.fail(ChannelError.ioOnClosedChannel)
    reset(.cancel, error: id.map { NIOHTTP2Errors.streamClosed(streamID: $0, errorCode: .cancel) })
  }

  // MARK: From the connection

  override func read(_ payload: HTTP2Frame.FramePayload) {
    var read = state.read(payload)
    if let part = read.first.take() { sink?.received(part) }
    if let part = read.second.take(), !isClosed { sink?.received(part) }
    guard let malformed = read.malformed else { return }
    // A malformed response: the request fails and the stream is reset.
    sink?.failed(malformed)
    reset(.protocolError, error: nil)
  }

  override func readCompleted() {
    sink?.readComplete()
  }

  override func writabilityChanged(_ writable: Bool) {
    sink?.writabilityChanged(writable)
  }

  override func failed(_ error: any Error) {
    sink?.failed(error)
  }

  override func ended(error: (any Error)?) {
    state.takePending()?.promise?.fail(ChannelError.ioOnClosedChannel)
    if let error {
      sink?.failed(error)
    } else {
      sink?.inactive()
    }
    let onClose = self.onClose
    self.onClose = nil
    onClose?()
  }
}

/// What an upstream stream tells the request forwarded on it (``UpstreamResponseReporter``).
protocol UpstreamResponseSink: AnyObject {
  func received(_ part: HTTPClientResponsePart)
  func readComplete()
  func writabilityChanged(_ writable: Bool)
  func failed(_ error: any Error)
  func inactive()
}

extension UpstreamResponseReporter: UpstreamResponseSink {}
