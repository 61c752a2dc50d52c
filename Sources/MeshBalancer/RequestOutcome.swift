/// How a request sent to a picked endpoint ended.
public enum RequestOutcome: Hashable, Sendable {
  /// A response arrived and the endpoint is healthy. Updates the RTT estimate and resets the
  /// endpoint's consecutive-failure count.
  case success
  /// The request failed because of the endpoint (connection error, 5xx the proxy classifies as a
  /// failure). Updates the RTT estimate (as tower does for any response) and counts towards
  /// failure accrual.
  case failure
  /// No connection to the endpoint could be made (refused, unreachable, timed out), so the request
  /// never reached it. The endpoint is ejected at once, as failure accrual would after its threshold
  /// (Linkerd puts an endpoint whose connection fails into reconnect back-off the same way), and the
  /// RTT estimate is left alone: an instant refusal must not make a dead endpoint look fast.
  case connectionFailure
  /// The request was abandoned (client went away, timeout elsewhere). Releases the pending slot;
  /// the elapsed time only raises the RTT estimate, and failure accrual ignores it.
  case cancelled
}
