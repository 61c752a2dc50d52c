import NIOCore
import NIOHTTP1
import NIOHTTP2

/// One client's stream on a downstream HTTP/2 connection (``HTTP2StreamsHandler``, server side): what a stream
/// channel with an ``HTTP2ServerStreamCodec`` and a ``ProxyRequestHandler`` was, without the channel. Its
/// request parts go to its ``ProxyRequestHandler`` (``requests``), which writes the response parts to it.
///
/// A malformed request is reset with PROTOCOL_ERROR and goes no further. Closing the stream from this side
/// writes what is held, then resets it with CANCEL if it is still open on the network, as closing a stream
/// channel does.
final class HTTP2DownstreamStream: HTTP2FrameStream {
  private var state: HTTP2ServerStreamState
  /// The handler of the stream's request; let go of when the stream ends.
  var requests: ProxyRequestHandler?

  init(connection: HTTP2StreamsHandler, eventLoop: any EventLoop, takingOutMeshFields: Bool) {
    self.state = HTTP2ServerStreamState(takingOutMeshFields: takingOutMeshFields)
    super.init(connection: connection, eventLoop: eventLoop)
  }

  // MARK: Writing (the request handler)

  func write(_ part: HTTPServerResponsePart) {
    guard !isClosed else { return }
    send(state.write(part, promise: nil))
  }

  /// Writes what is held and flushes the connection; also once the stream has closed, which writing its last
  /// frame can do at once (what was written before still has to go).
  func flush() {
    if !isClosed { send(state.takeHeld()) }
    connection.flush()
  }

  /// Ends the stream from this side: what is held is written, then a stream still open is reset with CANCEL.
  func close() {
    flush()
    reset(.cancel, error: nil)
  }

  /// Resets the stream with `code` (an upstream's own reset, passed on); what is held is dropped.
  func reset(_ code: HTTP2ErrorCode) {
    state.dropHeld()
    reset(code, error: nil)
  }

  // MARK: From the connection

  override func read(_ payload: HTTP2Frame.FramePayload) {
    var read = state.read(payload)
    if let part = read.first.take() { requests?.received(part) }
    if let part = read.second.take(), !isClosed { requests?.received(part) }
    if read.malformed != nil { reset(.protocolError) }
  }

  override func readCompleted() {
    requests?.downstreamReadComplete()
  }

  override func writabilityChanged(_ writable: Bool) {
    requests?.downstreamWritabilityChanged(writable)
  }

  override func ended(error: (any Error)?) {
    let requests = self.requests
    self.requests = nil
    requests?.downstreamInactive()
  }
}
