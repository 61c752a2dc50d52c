import NIOCore
import NIOPosix

/// An HTTP/2 (prior knowledge) application written at the frame level, for what a well-behaved library will
/// not do on purpose: it answers every request with HEADERS at once and its DATA `delay` later, whether or
/// not the stream was reset meanwhile. That is what a peer under load does without meaning to: frames it
/// wrote before the RST_STREAM arrived are still on the wire, and arrive after the stream was reset.
final class LateFramesApp: Sendable {
  let channel: any Channel
  var port: Int { channel.localAddress?.port ?? 0 }

  init(delay: TimeAmount) async throws {
    channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
      .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
      .childChannelInitializer { child in
        child.eventLoop.makeCompletedFuture { try child.pipeline.syncOperations.addHandler(FrameHandler(delay: delay)) }
      }
      .bind(host: "127.0.0.1", port: 0).get()
  }

  func stop() async { try? await channel.close() }

  private final class FrameHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let delay: TimeAmount
    var buffer = ByteBuffer()
    var prefaceLeft = 24
    var sentSettings = false

    init(delay: TimeAmount) { self.delay = delay }

    static func frame(type: UInt8, flags: UInt8, stream: UInt32, payload: [UInt8]) -> ByteBuffer {
      var out = ByteBuffer()
      out.writeInteger(UInt32(payload.count) << 8 | UInt32(type))  // 24-bit length, then the type byte
      out.writeInteger(flags)
      out.writeInteger(stream)
      out.writeBytes(payload)
      return out
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
      var bytes = unwrapInboundIn(data)
      buffer.writeBuffer(&bytes)
      if prefaceLeft > 0 {
        let n = min(prefaceLeft, buffer.readableBytes)
        buffer.moveReaderIndex(forwardBy: n)
        prefaceLeft -= n
      }
      if !sentSettings {
        sentSettings = true
        context.write(wrapOutboundOut(Self.frame(type: 4, flags: 0, stream: 0, payload: [])), promise: nil)
      }
      while buffer.readableBytes >= 9,
        let header = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self),
        buffer.readableBytes >= 9 + Int(header >> 8)
      {
        let length = Int(header >> 8)
        let type = UInt8(header & 0xff)
        let flags = buffer.getInteger(at: buffer.readerIndex + 4, as: UInt8.self) ?? 0
        let stream = (buffer.getInteger(at: buffer.readerIndex + 5, as: UInt32.self) ?? 0) & 0x7fff_ffff
        let payload = buffer.getBytes(at: buffer.readerIndex + 9, length: length) ?? []
        buffer.moveReaderIndex(forwardBy: 9 + length)
        switch type {
        case 4 where flags & 1 == 0:  // SETTINGS: acknowledge
          context.write(wrapOutboundOut(Self.frame(type: 4, flags: 1, stream: 0, payload: [])), promise: nil)
        case 6 where flags & 1 == 0:  // PING: answer
          context.write(wrapOutboundOut(Self.frame(type: 6, flags: 1, stream: 0, payload: payload)), promise: nil)
        case 1:  // HEADERS of a request: ":status: 200" (HPACK static index 8) now, the body later
          context.write(wrapOutboundOut(Self.frame(type: 1, flags: 4, stream: stream, payload: [0x88])), promise: nil)
          let body = Self.frame(type: 0, flags: 1, stream: stream, payload: Array("late\n".utf8))
          let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
          context.eventLoop.scheduleTask(in: delay) {
            let context = bound.value
            guard context.channel.isActive else { return }
            context.writeAndFlush(NIOAny(body), promise: nil)
          }
        default:
          break
        }
      }
      buffer.discardReadBytes()
      context.flush()
    }
  }
}
